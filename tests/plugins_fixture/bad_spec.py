"""A plugin that registers an invalid model spec (std of zero) and one valid dataset first."""

from cifarfw import hookimpl
from cifarfw.specs import DatasetSpec, ModelSpec


@hookimpl
def register_datasets(register):
    register(DatasetSpec("half-registered", lambda config: None))


@hookimpl
def register_models(register):
    register(ModelSpec("broken", "numpy", lambda num_classes, options: None, std=(0.0, 1.0, 1.0)))
