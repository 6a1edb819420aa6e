"""`python -m swinref ...`: the same command line as the `swinref` console script (swinref.cli.main)."""

import sys

from swinref.cli import main

if __name__ == "__main__":
    sys.exit(main())
