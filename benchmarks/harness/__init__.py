"""Pieces of the benchmark harness; the entry point is benchmarks/run.py."""
