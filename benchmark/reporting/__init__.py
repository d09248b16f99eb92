"""Leaderboards, reports, significance tests and plots, made from run records (MLflow or
committed trial files). Imports `benchmark.sweep` (to read MLflow) and `benchmark.trial`."""
