"""Ray Tune + Optuna sweeps (``sweep.py``) over search spaces kept as data (``spaces.py``)."""
