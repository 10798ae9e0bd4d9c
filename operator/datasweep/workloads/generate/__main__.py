from datasweep.workloads.generate.cli import main

main()
