"""The shapes of the JSON files DNSD reads back from a run folder, which may come from elsewhere: a reader checks a
value against its shape before it uses a field of it, so that a crafted file is refused, never a crash.

A shape is a type or a tuple of types (bool is no number; a float must be finite), a dict of required keys and
their shapes (Optional(shape) where a key may be absent), or [shape] for a list of items of one shape."""
import math

NUMBER = (int, float)
TEXT = (str, type(None))  # a string DNSD may leave unset


class Optional:
    def __init__(self, shape):
        self.shape = shape


def conforms(value, shape):
    """Whether value has shape."""
    if isinstance(shape, dict):
        return isinstance(value, dict) and all(
            (key in value and conforms(value[key], item)) if not isinstance(item, Optional) else
            (key not in value or conforms(value[key], item.shape)) for key, item in shape.items())
    if isinstance(shape, list):
        return isinstance(value, list) and all(conforms(item, shape[0]) for item in value)
    types = shape if isinstance(shape, tuple) else (shape,)
    if isinstance(value, bool) and bool not in types:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, types)


def mapping_of(value, shape):
    """Whether value is a dict of string keys to values of shape."""
    return isinstance(value, dict) and all(isinstance(key, str) and conforms(item, shape) for key, item in
                                           value.items())
