"""One trial: its configuration, data, model, backend, training loop and result record.

Imports `strategies` and `tasks`; knows nothing of Ray, MLflow or reports."""
