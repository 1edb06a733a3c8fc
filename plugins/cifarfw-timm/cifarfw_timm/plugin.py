"""The ``timm`` plugin: every ``timm.list_models()`` architecture as ``timm/<name>``.

A model zoo registered through hook API 2's ``register_model_providers``: this module
imports neither timm nor torch (``import timm`` alone takes 2-5 s, and ``cifarfw --help``
loads every plugin). The provider's ``names()`` and ``spec(name)`` import timm when a
model is listed or looked up; the factory builds the model when a run needs it
(:mod:`cifarfw_timm.zoo`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cifarfw import hookimpl
from cifarfw.specs import CIFAR10_MEAN, CIFAR10_STD, ModelProviderSpec, ModelSpec, Option

CIFARFW_HOOK_API = 2  # register_model_providers
NAMESPACE = "timm"

# The zoo recipe, the same values as cifarfw-keras-apps' (tests/test_timm_recipe.py compares
# them when both are installed), so `cifarfw compare` sets timm and Keras architectures side by
# side and flags only the model. From scratch on CIFAR-10 across families, convnets and vision
# transformers alike: AdamW with decoupled weight decay 0.05 (what transformers need; convnets
# train well with it too), one-cycle to lr 0.002, label smoothing 0.1, 4-px crops and flips.
ZOO_RECIPE: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 128,
    "optimizer": "adamw",
    "lr": 0.002,
    "weight_decay": 0.05,
    "schedule": "onecycle",
    "warmup_fraction": 0.15,
    "label_smoothing": 0.1,
    "augment": {"crop_padding": 4, "flip": True, "brightness": 0.0},
}
RECIPES: dict[str, dict[str, Any]] = {"zoo": ZOO_RECIPE}

OPTIONS: tuple[Option, ...] = (
    Option(
        "timm_args",
        "More timm.create_model arguments, KEY=VALUE,... with TOML values "
        "(e.g. drop_path_rate=0.1,global_pool='max'); empty for none.",
        default="",
    ),
    Option(
        "weights",
        "none (random, train from scratch), imagenet (timm's pretrained weights from the Hugging Face Hub) "
        "or PATH of a local state dict (.pth/.pt/.bin read with weights_only=True, or .safetensors).",
        default="none",
    ),
)


def names() -> Sequence[str]:
    """Every architecture of the installed timm, without the namespace (imports timm)."""
    from cifarfw_timm.zoo import list_names

    return list_names()


def _factory(name: str) -> Callable[..., Any]:
    def factory(num_classes: int, options: Mapping[str, Any] | None = None) -> Any:
        from cifarfw_timm.zoo import build

        return build(name, num_classes, options or {})

    return factory


def _validator(name: str) -> Callable[[Mapping[str, Any]], None]:
    def validate(options: Mapping[str, Any]) -> None:
        """Before any run folder exists: --timm-args parses and the model takes them (built on
        the meta device: no memory, no weights); a --weights PATH is a readable file; timm has
        ImageNet weights for --weights imagenet."""
        import os

        from cifarfw.errors import WeightsError
        from cifarfw_timm import zoo

        if options.get("timm_args"):
            zoo.check_args_build(name, options)
        weights = str(options.get("weights") or "none")
        if weights == "imagenet":
            if not zoo.has_pretrained(name):
                raise WeightsError(
                    f"timm has no pretrained weights for {name!r}; pass --weights PATH or --weights none"
                )
        elif weights != "none":
            path = os.path.expanduser(weights)
            if not os.path.isfile(path):
                raise WeightsError(f"weights file {weights} does not exist; {zoo.WEIGHTS_HELP}")
            if not os.access(path, os.R_OK):
                raise WeightsError(f"cannot read weights file {weights}; check its permissions")

    return validate


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``timm/<name>`` (imports timm; builds nothing)."""
    from cifarfw_timm.zoo import check_name, input_of, module_of

    check_name(name)
    side, args = input_of(name)
    extra = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return ModelSpec(
        name=f"{NAMESPACE}/{name}",
        framework="torch",
        factory=_factory(name),
        input_size=side,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        recipes=RECIPES,
        default_recipe="zoo",
        options=OPTIONS,
        validate=_validator(name),
        description=f"timm {module_of(name)}: create_model({name!r}{', ' + extra if extra else ''}), "
        f"{side}x{side} input",
    )


@hookimpl
def register_model_providers(register: Callable[[ModelProviderSpec], None]) -> None:
    register(
        ModelProviderSpec(
            namespace=NAMESPACE,
            names=names,
            spec=spec,
            framework="torch",
            options=OPTIONS,
            description="every timm architecture (timm.list_models()), from scratch at 32 px where it builds",
        )
    )
