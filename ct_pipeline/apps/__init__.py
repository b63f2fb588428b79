"""Applications: one module per command that does work, each a typed request in and typed
results or events out, with no printing; ``cli/`` parses options into the request and shows
what comes back.

* ``diagnose`` -- series in, per-series outcomes, CSVs and the report out.
"""
