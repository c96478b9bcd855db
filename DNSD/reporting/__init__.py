"""What a user reads of runs: a checkpoint's test report, the paper's table, curves and figures, and the model
card."""
