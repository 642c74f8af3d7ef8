"""Package data: the demo models and their model cards."""
