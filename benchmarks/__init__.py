"""Side-by-side benchmarks (see shared BENCHMARKS.md): run as `python -m benchmarks.NAME`."""
