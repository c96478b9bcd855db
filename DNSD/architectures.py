"""The networks a run can build (model.arch), each declared once: the depths it can be built with and the model keys
it reads. The config's choices and checks derive from here; DNSD/models builds each network from the same keys."""
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Architecture:
    summary: str
    fits: Callable[[int], bool]  # the depths it can be built with
    depths: str  # the same, in words
    keys: tuple[str, ...]  # the model keys it reads besides arch and depth


# The largest depths are about twice what a GPU holds at batch 128 (ResNet-1202), so that a typing slip never builds
# a network that takes the machine's memory.
ARCHITECTURES = {
    "resnet": Architecture(
        "ResNet 6n+2 with stochastic depth", lambda d: 8 <= d <= 2402 and (d - 2) % 6 == 0,
        "6n+2 with 1 <= n <= 400: 8, 20, 32, 44, 56, 110, 1202, ...",
        ("survival_last", "survival_mode", "drop_mode", "residual_scaling", "bn_weight_init", "shortcut_downsample")),
    "diracnet": Architecture(
        "DiracNet 6n+4-k", lambda d: 10 <= d <= 1204 and (d - 4) % 6 == 0,
        "6n+4 with 1 <= n <= 200: 10, 16, 22, 28, 34, ...", ("width",)),
    "vanillanet": Architecture(
        "VanillaNet-d for 32x32 images", lambda d: 3 <= d <= 64, "3 to 64 (the paper's VanillaNet-5 to -13)",
        ("width", "deep_training_epochs")),
}


def check_depth(arch, depth):
    """ValueError unless the architecture can be built with this depth."""
    if not ARCHITECTURES[arch].fits(depth):
        raise ValueError(f"{arch} depth must be {ARCHITECTURES[arch].depths}; got {depth}")


def architectures_reading(key):
    """The architectures whose networks read a model key (every one for arch and depth)."""
    return tuple(name for name, architecture in ARCHITECTURES.items()
                 if key in ("arch", "depth") or key in architecture.keys)
