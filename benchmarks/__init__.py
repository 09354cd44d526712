"""The evalfleet benchmark harness: `python -m benchmarks.run`."""
