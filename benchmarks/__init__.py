"""Benchmarks behind `make bench`; each `bench_*.py` measures a figure against a baseline in the same run."""
