from datasweep.cli.main import main

main()
