"""``python -m uipbench.cli ...``, the same as the ``uipbench`` command."""
import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
