"""Benchmarks for prism_async: run ``python -m benchmarks`` (``--quick`` for a short run)."""
