"""lrsweep: learning-rate schedule sweeps on Optuna studies in SQL storage.

The one installed top-level name. Its packages are the repository's top-level folders
(`sweeps`, `trainer`, `storage`, linked here), so a user's own `trainer.py` or `storage.py`
neither shadows ours nor is shadowed by it. The Python API is `lrsweep.sweeps`.
"""
