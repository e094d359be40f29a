"""harvester: polls SpiderIQ job results under one shared rate limit and stores them in PostgreSQL."""

__version__ = "0.1.0"
