"""``python -m harvester.sim``: the simulator without the main CLI."""

from __future__ import annotations

import sys

from harvester.sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
