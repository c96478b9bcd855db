"""paddle.hub's entries, one per shipped config, read from a clone of this repository (nothing is downloaded):

    model = paddle.hub.load("path/to/DNSD", "resnet110_sd", source="local", checkpoint="runs/x/best.pdckpt")

gives the checkpoint's network in evaluation mode; without checkpoint, the config's network, freshly initialised.
from_checkpoint loads a checkpoint of any config (a depth or data set no shipped config has).
"""
import DNSD as _DNSD
from DNSD.config import HUB_ANY_CHECKPOINT as _ANY
from DNSD.config import hub_configs as _hub_configs

dependencies = ["paddle", "numpy", "yaml"]


def _entry(name):
    def entry(checkpoint=None):
        return _DNSD.hub_model(name, checkpoint)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"The network of configs/{name}.yaml: fresh, or trained (checkpoint=PATH, in evaluation mode)."
    return entry


def _from_checkpoint(checkpoint):
    """The network of any DNSD checkpoint, whatever its config, in evaluation mode."""
    return _DNSD.hub_checkpoint(checkpoint)


globals().update({_name: _entry(_name) for _name in _hub_configs()})
globals()[_ANY] = _from_checkpoint
