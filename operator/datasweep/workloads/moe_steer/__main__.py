"""`python -m datasweep.workloads.moe_steer` = `datasweep worker moe-steer`."""

from datasweep.workloads.moe_steer.cli import main

if __name__ == "__main__":
    main(prog_name="python -m datasweep.workloads.moe_steer")
