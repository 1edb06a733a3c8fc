"""The study's AlexNet: torchvision's AlexNet with the classifier replaced and part of it frozen.

The study kept the pretrained ``features`` and ``avgpool`` (6x6) and replaced the whole
classifier with Dropout(0.5), Linear(9216→4096), ReLU, Dropout(0.5), Linear(4096→1024),
ReLU, Linear(1024→10), all freshly initialised; it then trained only the last two Linear
layers (4,205,578 parameters). The state-dict keys stay torchvision's (``features.*``,
``classifier.*``), so torchvision checkpoints and cifarfw checkpoints both load.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import AlexNet

from cifarfw_torch.layers import UniformDropout, UpscaledConv2d

FREEZE_POLICIES = ("study", "features", "none")
FEATURE_DIM = 256 * 6 * 6  # what features + avgpool + flatten give for any input size


class CastCachingLinear(nn.Linear):
    """An ``nn.Linear`` that, while frozen, reuses its autocast copy of weight and bias.

    Autocast casts parameters that do not require grad anew on every call; for the frozen
    9216→4096 layer of the study's head that is 38M values copied each training step, a
    large share of the step once the features are cached. The copy holds the very values
    autocast would make; it is remade when the weights change (in-place updates bump their
    version, ``.to()`` moves their storage) or the autocast dtype changes.
    """

    _cast: tuple[torch.Tensor, torch.Tensor | None] | None = None
    _cast_key: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        if self.weight.requires_grad or not torch.is_autocast_enabled(device_type):
            return super().forward(x)
        dtype = torch.get_autocast_dtype(device_type)
        bias = self.bias
        key = (dtype, self.weight.data_ptr(), self.weight._version)
        key += (bias.data_ptr(), bias._version, bias.requires_grad) if bias is not None else ()
        if self._cast is None or self._cast_key != key:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor even if made during eval
                self._cast = (self.weight.to(dtype), bias.to(dtype) if bias is not None else None)
            self._cast_key = key
        weight, cast_bias = self._cast
        if bias is not None and bias.requires_grad:  # a trainable bias keeps autocast's own handling
            cast_bias = bias.to(dtype)
        with torch.autocast(device_type, enabled=False):
            return F.linear(x.to(dtype), weight, cast_bias)


def study_classifier(num_classes: int) -> nn.Sequential:
    """The study's replacement classifier, layer for layer (indices 1, 4, 6 are the Linears).

    The 9216→4096 layer is a :class:`CastCachingLinear` (frozen under ``--freeze study``);
    the dropouts are :class:`~cifarfw_torch.layers.UniformDropout` (``nn.Dropout``'s
    function, with a mask drawn faster on CPUs: a third of the cached head's step went
    to ``bernoulli_``).
    """
    return nn.Sequential(
        UniformDropout(0.5),
        CastCachingLinear(FEATURE_DIM, 4096),
        nn.ReLU(inplace=True),
        UniformDropout(0.5),
        nn.Linear(4096, 1024),
        nn.ReLU(inplace=True),
        nn.Linear(1024, num_classes),
    )


class StudyAlexNet(AlexNet):
    """torchvision's AlexNet with the study's classifier and a freeze policy.

    ``cifarfw_split()`` is the feature-cache protocol of the torch trainer: it returns
    ``(prefix, head)`` with ``model(x) == head(prefix(x))`` when the prefix (features,
    avgpool, flatten) is frozen, else ``None``.
    """

    def __init__(self, num_classes: int = 10, freeze: str = "study") -> None:
        super().__init__()
        self.classifier = study_classifier(num_classes)
        self.freeze = freeze
        apply_freeze(self, freeze)

    def cifarfw_split(self) -> tuple[nn.Module, nn.Module] | None:
        prefix = nn.Sequential(self.features, self.avgpool, nn.Flatten(1))
        # Only a fully frozen prefix may be cached: its outputs must not change during training.
        # (It has no dropout or batch norm, so in eval mode it is deterministic.)
        if any(p.requires_grad for p in prefix.parameters()):
            return None
        # The classifier starts with Dropout, random in training, so the cache stops before it.
        return prefix, self.classifier

    def cifarfw_native_prefix(self, native_size: int, input_size: int) -> nn.Module | None:
        """The frozen prefix for images of ``native_size`` pixels, with the bilinear resize to
        ``input_size`` folded into the first convolution (the feature cache's protocol):
        the same features to float rounding, without making any 224-pixel image."""
        if self.cifarfw_split() is None:
            return None
        first = UpscaledConv2d.from_conv(self.features[0], native_size, input_size)
        if first is None:
            return None
        return nn.Sequential(first, *pool_before_relu(list(self.features)[1:]), self.avgpool, nn.Flatten(1))


def pool_before_relu(layers: list[nn.Module]) -> list[nn.Module]:
    """``layers`` with each ReLU that a max-pool follows moved after it: the two commute
    (ReLU is monotonic), and the ReLU then touches a quarter of the values."""
    out = list(layers)
    for i in range(len(out) - 1):
        if isinstance(out[i], nn.ReLU) and isinstance(out[i + 1], nn.MaxPool2d):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def trainable_layers(model: StudyAlexNet, policy: str) -> Iterator[nn.Module]:
    """The modules a freeze policy leaves trainable."""
    if policy == "study":  # the last two Linear layers: 4096→1024 and 1024→classes
        yield model.classifier[4]
        yield model.classifier[6]
    elif policy == "features":  # the whole classifier
        yield model.classifier
    elif policy == "none":
        yield model
    else:
        raise ValueError(f"unknown freeze policy {policy!r}; expected one of {', '.join(FREEZE_POLICIES)}")


def apply_freeze(model: StudyAlexNet, policy: str) -> None:
    """Set ``requires_grad`` so that exactly the policy's layers train."""
    layers = list(trainable_layers(model, policy))
    model.requires_grad_(False)
    for layer in layers:
        layer.requires_grad_(True)
    model.freeze = policy


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"total": n, "trainable": m}`` counted from the model itself."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def build(num_classes: int, options: dict) -> StudyAlexNet:
    """The factory behind ModelSpec ``alexnet``: options ``weights`` and ``freeze``."""
    from cifarfw_alexnet.weights import load_backbone

    with torch.no_grad():
        model = StudyAlexNet(num_classes, freeze=options.get("freeze") or "study")
    load_backbone(model, options.get("weights") or "imagenet")
    return model
