"""Benchmarks behind ``make bench``: harvest efficiency, ingest speed, claim latency, daemon memory.

Each sub-benchmark prints a table and writes its figures to ``bench/results/<name>.json``. They run
against a throwaway PostgreSQL and the bundled simulator, never the real API; they are measurements,
not tests, so nothing here asserts a timing.
"""
