"""Every random draw of a run, derived from its one seed."""
import numpy as np

PURPOSES = ("split", "shuffle", "augment", "gates")


def generator(seed, purpose, *counters):
    """The numpy Generator of one use of randomness, derived from the run's seed alone: the split, the shuffling of
    an epoch, the augmentation or the gates of one step (counters: epoch, step).

    Deriving each draw from (seed, purpose, epoch, step), instead of taking it from a long-lived generator, makes it
    independent of who asks and when: a resumed run, a prefetching loader and every data-parallel rank get the same
    numbers, and a checkpoint need not hold any generator state.
    """
    return np.random.default_rng([seed, PURPOSES.index(purpose), *counters])
