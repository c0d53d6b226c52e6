"""Benchmarks: the service against a hand-written Optuna loop, side by side in one run."""
