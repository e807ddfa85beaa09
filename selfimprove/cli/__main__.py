"""`python -m selfimprove.cli ...`, the same CLI as the `selfimprove` script, so that launchers that run a
module work: `accelerate launch [--config_file F] -m selfimprove.cli train ...`."""

from selfimprove.cli import entry

if __name__ == "__main__":
    entry()
