"""``python -m ragroute ...``: the same command line as ``ragroute ...``."""

from ragroute.cli import main

if __name__ == "__main__":
    main(prog_name="ragroute")
