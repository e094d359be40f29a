"""The chaos run, in one place: ``run`` drives it (``python -m bench.chaos``), ``fleet`` starts and
kills the daemons, ``checks`` compares what was stored with a clean run and judges it. The short
run inside ``make test`` (tests/chaos/test_chaos_short.py) asserts the same verdict."""
