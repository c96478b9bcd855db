"""What a user reads of runs: a checkpoint's test report, the paper's table, curves and figures, the model
card, and the audit that re-trains an epoch to check a run."""
