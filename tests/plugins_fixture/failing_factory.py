"""A model plugin whose factory raises, with a message of two lines."""

from cifarfw import hookimpl
from cifarfw.specs import ModelSpec


def _explode(num_classes, options):
    raise ValueError("bad width\nsecond line")


@hookimpl
def register_models(register):
    register(ModelSpec("explodes", "numpy", _explode))
