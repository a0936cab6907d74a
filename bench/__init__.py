"""Benchmarks and replay harnesses: scenario runs, reports and the benches (not the service's runtime)."""
