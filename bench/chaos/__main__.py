"""``python -m bench.chaos``: the long crash-and-fault run (``make chaos``)."""

from __future__ import annotations

from bench.chaos.run import main

raise SystemExit(main())
