"""``python -m harvester``: the same as the ``harvester`` command."""

from harvester.commands.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
