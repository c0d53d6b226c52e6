"""Optuna studies over learning-rate schedules: search space, workers, export."""
