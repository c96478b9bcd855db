"""Training a run: the loop and its step, the optimiser, meters, data-parallel ranks, evaluation on a split,
the best checkpoint, and the run's life from start to final test (run.py)."""
