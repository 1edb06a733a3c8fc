"""cifarfw-sweep: ``cifarfw sweep``, many ordinary runs at once (grids, seeds, Optuna searches)."""

__version__ = "0.1.0"
