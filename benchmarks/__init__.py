"""Benchmarks and reference implementations used to check kfr against other tools."""
