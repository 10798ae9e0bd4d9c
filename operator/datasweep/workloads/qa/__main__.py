from datasweep.workloads.qa.cli import main

if __name__ == "__main__":
    main(prog_name="datasweep worker qa")
