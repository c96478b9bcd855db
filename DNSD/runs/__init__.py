"""What a run leaves on disk: the run folder's files and rules, checkpoints and their file format, the lock of
a live run, and the manifest of what produced it."""
