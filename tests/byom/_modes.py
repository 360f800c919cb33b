"""`scaletrain train CONFIG --mode M` for several modes in one MPI job (one start-up).

    mpiexec -n N python _modes.py CONFIG OUT_DIR MODE [MODE ...]

Each mode's run goes to OUT_DIR/MODE; a failing mode stops the whole job.
"""

import sys

from scaletrain.cli import main
from scaletrain.parallel import World

if __name__ == "__main__":
    config, out, *modes = sys.argv[1:]
    for mode in modes:
        code = main(["train", config, "--mode", mode, "--run-dir", f"{out}/{mode}"])
        if code != 0:
            World.detect().abort(code)
