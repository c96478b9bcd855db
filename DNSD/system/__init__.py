"""The machine: the device a run uses and its deep check, what nvidia-smi says, the CPU numerics, the stop signals,
and the quieting of the libraries' console output."""
