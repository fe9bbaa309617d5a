"""`python -m lastedocation.training RUN_DIR`: the process the studio spawns."""

import sys
from pathlib import Path

from lastedocation.training.recipe import main_exit_code

if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m lastedocation.training RUN_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main_exit_code(Path(sys.argv[1])))
