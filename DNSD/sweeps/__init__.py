"""Several runs of one config: a sweep's grid points and seeds and its folder, the workers that share its runs,
and the launchers that start them on this machine or as a Slurm job array."""
