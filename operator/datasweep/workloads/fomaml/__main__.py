from datasweep.workloads.fomaml.cli import main

main(prog_name="python -m datasweep.workloads.fomaml")
