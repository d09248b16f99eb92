"""Suites of trials on Ray Tune (or Ray Train workers inside a trial), recorded in MLflow.

Imports `benchmark.trial`; knows nothing of leaderboards or reports."""
