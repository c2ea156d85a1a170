"""Benchmarks: scripts that write bench/results.json (run them with the project venv)."""
