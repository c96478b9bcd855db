"""The engine: the training loop and its bookkeeping, evaluation, checkpoints, the run folder, the device and the
data-parallel ranks."""
