"""AlexNet's backbone weights: ``--weights imagenet | none | PATH``.

``imagenet`` goes through torchvision's weights API: the first use downloads
``AlexNet_Weights.IMAGENET1K_V1`` into the torch hub cache with torchvision's loader,
which checks the SHA-256 prefix in the file name; later uses read the cached file after
checking that prefix again (a file changed since the download is refused). A local
``PATH`` is read with ``torch.load(weights_only=True)``. Either way the state dict then
goes through :func:`apply_state_dict`, which checks every key and shape. Every failure is
a one-line :class:`~cifarfw.errors.WeightsError` that names the file and what to do.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarfw.errors import WeightsError

DOWNLOAD_TIMEOUT_S = 60.0  # seconds without data before a download is given up
SOURCES_HELP = "--weights takes imagenet, none or the path of an AlexNet state dict"
# torchvision's ImageNet classifier (9216→4096→4096→1000): the study replaces it, so a file
# carrying exactly these shapes has its classifier ignored and only its features loaded.
IMAGENET_CLASSIFIER = {
    "classifier.1.weight": (4096, 9216),
    "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096),
    "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096),
    "classifier.6.bias": (1000,),
}
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # the convention torch.hub checks: name-<sha256 prefix>.pth


def _imagenet_weights() -> Any:
    from torchvision.models import AlexNet_Weights

    return AlexNet_Weights.IMAGENET1K_V1


def imagenet_cache_path() -> Path:
    """Where torchvision keeps the ImageNet AlexNet weights: torch.hub.get_dir()/checkpoints/."""
    url = _imagenet_weights().url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    message = text[0] if text else type(err).__name__
    return message if len(message) <= 200 else message[:197] + "..."


def read_state_dict_file(path: str | Path) -> Mapping[str, torch.Tensor]:
    """Load a state dict with ``torch.load(weights_only=True)``; bad files raise WeightsError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; {SOURCES_HELP}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise WeightsError(f"cannot read weights file {path}: {err.strerror or err}") from None
    except Exception as err:  # truncated zip, garbage bytes, pickled objects refused by weights_only, ...
        # torch's own message is long and may suggest weights_only=False, which is unsafe here.
        raise WeightsError(
            f"cannot read weights file {path}: it is truncated, tampered or not a torch state dict "
            f"({type(err).__name__} from torch.load(weights_only=True))"
        ) from None
    # A training checkpoint may wrap the state dict; take the model's part.
    if isinstance(state, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            inner = state.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    return state


def _check_hash_prefix(path: Path) -> None:
    match = _HASH_IN_NAME.search(path.name)
    if match is None:
        return
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(match.group(1)):
        raise WeightsError(
            f"cached weights file {path} does not match its SHA-256 prefix {match.group(1)} (changed or "
            f"truncated since the download); delete it to download it again, or pass --weights PATH"
        )


def imagenet_state_dict() -> tuple[Mapping[str, torch.Tensor], Path]:
    """The ImageNet AlexNet state dict from the torch hub cache, downloading it if absent."""
    weights = _imagenet_weights()
    cached = imagenet_cache_path()
    if cached.exists():
        _check_hash_prefix(cached)
        return read_state_dict_file(cached), cached
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torch.hub's urlopen has none: a dropped route would hang
    try:
        # torchvision's own loader: downloads to a temporary file, checks the hash, then moves it.
        state = weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, refused connections
        raise WeightsError(
            f"cannot download the ImageNet AlexNet weights from {weights.url} ({_one_line(err)}); "
            f"offline, put {cached.name} into {cached.parent} (torch.hub.get_dir()/checkpoints), "
            f"pass --weights PATH for a local state dict, or --weights none to train from scratch"
        ) from None
    except RuntimeError as err:  # "invalid hash value" from torch.hub, or an unreadable download
        raise WeightsError(
            f"the downloaded ImageNet AlexNet weights {cached} were refused ({_one_line(err)}); "
            f"run again to retry the download, or pass --weights PATH"
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return state, cached


def apply_state_dict(model: nn.Module, state: Any, source: str | Path) -> None:
    """Load ``features.*`` (and the classifier when it is this model's) from ``state``.

    ``state`` may be a torchvision AlexNet state dict (its ImageNet classifier is ignored,
    as the study replaced it), a features-only state dict, or a state dict of this very
    model (e.g. a cifarfw checkpoint). Anything else is refused, naming the first
    mismatching key.
    """
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {source} does not hold a state dict (parameter names mapped to tensors)")
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise WeightsError(
            f"weights file {source} is not an AlexNet state dict: unexpected key {unexpected[0]!r}"
            f"{f' (and {len(unexpected) - 1} more)' if len(unexpected) > 1 else ''}"
        )
    feature_keys = [k for k in own if k.startswith("features.")]
    missing = [k for k in feature_keys if k not in state]
    if missing:
        raise WeightsError(f"weights file {source} lacks {missing[0]!r}; it is not a complete AlexNet state dict")
    classifier = {k: v for k, v in state.items() if k.startswith("classifier.")}
    own_classifier = {k: tuple(v.shape) for k, v in own.items() if k.startswith("classifier.")}
    given_classifier = {k: tuple(v.shape) for k, v in classifier.items()}
    if all(own_classifier.get(k) == shape for k, shape in given_classifier.items()):
        load = dict(state)  # features only, or (part of) this model's own classifier
    elif given_classifier == IMAGENET_CLASSIFIER:
        load = {k: state[k] for k in feature_keys}
    else:
        key = next(k for k in sorted(given_classifier) if own_classifier.get(k) != given_classifier[k])
        raise WeightsError(
            f"weights file {source} has {key} of shape {list(given_classifier[key])}, but this model's is "
            f"{list(own_classifier.get(key, ()))} and it is not torchvision's ImageNet classifier either"
        )
    for key, tensor in load.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise WeightsError(
                f"weights file {source} has {key} of shape {list(tensor.shape)}, but AlexNet's is {list(own[key].shape)}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"weights file {source} holds non-finite values in {key}; it is corrupt")
    with torch.no_grad():
        model.load_state_dict(load, strict=False)


def load_backbone(model: nn.Module, source: str) -> str:
    """Apply ``--weights`` (imagenet, none or a path) to ``model``; return what was loaded."""
    if source == "none":
        return "none"
    if source == "imagenet":
        state, path = imagenet_state_dict()
    else:
        path = Path(source).expanduser()
        state = read_state_dict_file(path)
    apply_state_dict(model, state, path)
    return str(path)
