"""The ``keras-apps`` plugin: every ``keras.applications`` constructor as ``keras/<name>``.

A model zoo registered through hook API 2's ``register_model_providers``: the names come
from :data:`APPS`, a list shipped with the plugin (``tests/test_keras_apps_names.py``
checks it against the installed Keras: the same constructors, the same smallest inputs),
so neither listing nor looking up a model imports Keras or TensorFlow. Only the factory
does, when a run builds the model.

Each model is the library's own: ``Constructor(weights=None, include_top=True,
classes=num_classes, input_shape=(s, s, 3))`` with ``s`` the smallest side the
constructor accepts (32 for most; the Keras trainer resizes the 32x32 batches to larger
sides on the fly), so its parameter count is exactly what Keras gives for 10 classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cifarfw import hookimpl
from cifarfw.specs import CIFAR10_MEAN, CIFAR10_STD, ModelProviderSpec, ModelSpec

CIFARFW_HOOK_API = 2  # register_model_providers
NAMESPACE = "keras"

# The zoo recipe, the same values as cifarfw-timm's (that plugin's tests compare the two when
# both are installed), so `cifarfw compare` sets Keras and timm architectures side by side and
# flags only the model. From scratch on CIFAR-10 across families (convnets and ConvNeXts
# alike): AdamW with decoupled weight decay, one-cycle, label smoothing, crop and flip.
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

# Models whose own first layers rescale 0-255 pixels (Rescaling/Normalization inside the
# model: ConvNeXt, EfficientNet, EfficientNetV2, MobileNetV3). The trainer feeds them
# 0-255 values (mean 0, std 1/255) so the library's preprocessing sees what it expects.
PIXELS_255 = ((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))


@dataclass(frozen=True)
class App:
    """One ``keras.applications`` constructor: its attribute name, smallest input side, and
    whether it rescales raw 0-255 pixels itself."""

    constructor: str
    min_size: int = 32
    own_preprocessing: bool = False

    @property
    def name(self) -> str:
        return self.constructor.lower()


def _apps(*entries: App) -> dict[str, App]:
    return {app.name: app for app in entries}


# Every constructor of keras.applications (Keras 3.15), with the smallest input
# `imagenet_utils.obtain_input_shape` accepts when include_top=True and weights=None.
APPS: dict[str, App] = _apps(
    *(App(f"ConvNeXt{size}", own_preprocessing=True) for size in ("Tiny", "Small", "Base", "Large", "XLarge")),
    *(App(f"DenseNet{depth}") for depth in (121, 169, 201)),
    *(App(f"EfficientNetB{i}", own_preprocessing=True) for i in range(8)),
    *(App(f"EfficientNetV2{v}", own_preprocessing=True) for v in ("B0", "B1", "B2", "B3", "S", "M", "L")),
    App("InceptionResNetV2", min_size=75),
    App("InceptionV3", min_size=75),
    App("MobileNet"),
    App("MobileNetV2"),
    App("MobileNetV3Small", own_preprocessing=True),
    App("MobileNetV3Large", own_preprocessing=True),
    App("NASNetMobile"),
    App("NASNetLarge"),
    *(App(f"ResNet{depth}") for depth in (50, 101, 152)),
    *(App(f"ResNet{depth}V2") for depth in (50, 101, 152)),
    App("VGG16"),
    App("VGG19"),
    App("Xception", min_size=71),
)


def names() -> Sequence[str]:
    """The model names without the namespace (``mobilenetv2``, ...); imports nothing."""
    return sorted(APPS)


def _app(name: str) -> App:
    from cifarfw.errors import UsageError
    from cifarfw.suggest import did_you_mean

    app = APPS.get(name.lower())
    if app is None:
        raise UsageError(
            f"keras.applications has no model {name!r}{did_you_mean(name.lower(), list(APPS))}; "
            "`cifarfw models --plugin keras-apps` lists them"
        )
    return app


def build(app: App, num_classes: int) -> Any:
    """``keras.applications.<Constructor>`` from scratch with the library's own top."""
    # cifarfw_keras._tf imports Keras as the trainer does: TensorFlow backend, quiet logs.
    from cifarfw_keras._tf import keras

    constructor = getattr(keras.applications, app.constructor)
    size = app.min_size
    return constructor(weights=None, include_top=True, classes=num_classes, input_shape=(size, size, 3))


def _factory(app: App) -> Callable[..., Any]:
    def factory(num_classes: int, options: Mapping[str, Any] | None = None) -> Any:
        return build(app, num_classes)

    return factory


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``keras/<name>``; imports no Keras."""
    app = _app(name)
    mean, std = PIXELS_255 if app.own_preprocessing else (CIFAR10_MEAN, CIFAR10_STD)
    return ModelSpec(
        name=f"{NAMESPACE}/{app.name}",
        framework="keras",
        factory=_factory(app),
        input_size=app.min_size,
        mean=mean,
        std=std,
        recipes=RECIPES,
        default_recipe="zoo",
        description=(
            f"keras.applications.{app.constructor}(weights=None, classes=10), {app.min_size}x{app.min_size} input"
        ),
    )


@hookimpl
def register_model_providers(register: Callable[[ModelProviderSpec], None]) -> None:
    register(
        ModelProviderSpec(
            namespace=NAMESPACE,
            names=names,
            spec=spec,
            framework="keras",
            description=f"every keras.applications constructor ({len(APPS)}), from scratch with the library's top",
        )
    )
