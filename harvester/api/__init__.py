"""SpiderIQ's API as harvester speaks it: the HTTP client (``client``), what each answer means
(``classify`` into the ``outcomes``), the event stream's framing (``sse``) and its event bodies
(``event_bodies``). ``classify`` is pure; only ``client`` and the stream's reader do I/O."""
