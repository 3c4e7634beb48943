"""Benchmarks: speed and memory against named references (this package), accuracy experiments (``benchmarks.accuracy``);
``python -m benchmarks`` runs them and writes ``benchmarks/REPORT.md``."""
