"""The `ct` command: a thin Typer layer over :mod:`ct_pipeline`."""
