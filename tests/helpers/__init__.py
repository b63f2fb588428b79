"""What tests share besides fixtures: running `ct` (cli_process), tiny data sets and networks, digests.

Plain modules imported by name rather than conftest.py fixtures, so that a reader sees where a helper
comes from and a subprocess or a module-scoped fixture can call it too; fixtures that only wrap one of
these (``tiny``, ``shared_data``) are in tests/conftest.py.
"""
