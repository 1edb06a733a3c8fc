"""Installed plugins for the `plugins check` tests: a trainer and models, one of them
naming a framework no trainer serves."""

from __future__ import annotations

from cifarfw import hookimpl
from cifarfw.specs import ModelSpec, TrainerSpec


def _factory(num_classes, options):
    return None


class Plugin:
    def __init__(self, framework: str, trainer: bool = False) -> None:
        self.framework, self.trainer = framework, trainer

    @hookimpl
    def register_trainers(self, register):
        if self.trainer:
            register(TrainerSpec("torch", "torch", object, description="a trainer that never trains"))

    @hookimpl
    def register_models(self, register):
        register(ModelSpec(f"{self.framework}-net", self.framework, _factory))


GOOD = Plugin("torch", trainer=True)
TYPO = Plugin("pytorch")
