"""The ``harvester`` command line: ``cli`` parses and dispatches; the other modules are what the
commands do and show (status and show reports, exports, imports, the demo)."""
