"""The timm side of the zoo: names, per-model 32-px arguments, the factory.

Imported by the provider's callables only (``names()``, ``spec(name)``), never by the
plugin module: importing it imports nothing heavy, but every function that needs timm
imports it (2-5 s), and the factory imports torch.

How a model is built for CIFAR-10: ``timm.create_model(name, num_classes=10,
pretrained=False, **args)`` at input side ``size``, where ``(size, args)`` come from
``inputs.json``. That table is written by :mod:`cifarfw_timm.probe`, which builds every
architecture on torch's meta device (no memory, no arithmetic) and runs a forward pass:
first at 32 px with ``img_size=32`` (the models whose constructor takes it: vision
transformers, Swin and the other windowed transformers, MLP-Mixers, ...), then at 32 px
without it (convnets), then at growing sides until one works (the model's declared
input size; the trainer resizes the 32x32 batches to it). A name the table lacks (a newer
timm) is probed the same way when it is looked up.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from cifarfw.config import split_values
from cifarfw.errors import UsageError, WeightsError
from cifarfw.suggest import did_you_mean

TABLE = "inputs.json"
# Arguments the zoo sets itself: --timm-args may not override them (the spec's input size and
# the run's class count depend on them; pretrained weights are --weights).
RESERVED_ARGS = {
    "num_classes": "the class count comes from the dataset",
    "pretrained": "use --weights imagenet",
    "pretrained_cfg": "use --weights PATH",
    "pretrained_cfg_overlay": "use --weights PATH",
    "img_size": "the zoo fixes each model's input size (cifarfw models --plugin timm --json shows it)",
    "in_chans": "CIFAR-10 images have 3 channels",
}
DOWNLOAD_PROBE_TIMEOUT_S = 10.0  # one connection attempt to the weights' host before asking timm
WEIGHTS_HELP = "--weights takes none, imagenet or the path of a state dict of this model"
_ARG_KEY = re.compile(r"[A-Za-z_]\w*")


# --- names and the input table ----------------------------------------------------------------


@functools.cache
def list_names() -> tuple[str, ...]:
    """Every architecture of the installed timm (``timm.list_models()``: no pretrained tags)
    but the feature encoders the table marks unsupported (they output no class scores)."""
    import timm

    skip = unsupported()
    return tuple(name for name in timm.list_models() if name not in skip)


@functools.cache
def _raw_table() -> dict[str, Any]:
    return json.loads(resources.files("cifarfw_timm").joinpath(TABLE).read_text(encoding="utf-8"))


@functools.cache
def table() -> dict[str, tuple[int, dict[str, Any]]]:
    """``inputs.json``: model name -> (input side, extra create_model arguments)."""
    return {
        name: (int(entry[0]), dict(entry[1]) if len(entry) > 1 else {})
        for name, entry in _raw_table()["models"].items()
    }


def unsupported() -> dict[str, str]:
    """``inputs.json``'s models that cannot be trained as classifiers, with the reason."""
    return dict(_raw_table().get("unsupported", {}))


@functools.cache
def input_of(name: str) -> tuple[int, dict[str, Any]]:
    """(input side, extra create_model arguments) of ``name``: the table's, else probed now."""
    known = table().get(name)
    if known is not None:
        return known
    why = unsupported().get(name)
    if why is None:
        from cifarfw_timm.probe import probe

        found = probe(name)
        if not isinstance(found, str):
            return found
        why = found
    raise UsageError(f"timm model {name!r} cannot be trained as a CIFAR-10 classifier: {why}")


def module_of(name: str) -> str:
    """The timm module that defines ``name`` (``vision_transformer``), for descriptions."""
    from timm.models import _registry

    return str(_registry._model_to_module.get(name, "?"))


def check_name(name: str) -> None:
    """A UsageError with close matches unless the installed timm has ``name``."""
    import timm

    if name in unsupported():
        input_of(name)  # raises, with the reason
    names = list_names()
    if name not in set(names):
        raise UsageError(
            f"timm {timm.__version__} has no model {name!r}{did_you_mean(name, list(names))}; "
            "`cifarfw models --plugin timm --filter 'PATTERN'` lists them"
        )


# --- --timm-args -------------------------------------------------------------------------------


def parse_timm_args(text: str | None) -> dict[str, Any]:
    """``"drop_path_rate=0.1,global_pool='max'"`` -> ``{"drop_path_rate": 0.1, "global_pool": "max"}``.

    Values are TOML literals (numbers, booleans, quoted strings, lists), else plain
    strings, as ``--set`` reads them.
    """
    from cifarfw.config import parse_set

    args: dict[str, Any] = {}
    for item in filter(None, split_values(text or "")):
        key = item.partition("=")[0].strip()
        if "=" not in item or not _ARG_KEY.fullmatch(key):
            raise UsageError(f"--timm-args expects KEY=VALUE,... (e.g. drop_path_rate=0.1), got {item!r}")
        if key in RESERVED_ARGS:
            raise UsageError(f"--timm-args cannot set {key}: {RESERVED_ARGS[key]}")
        args.update(parse_set(item))  # --set's reading: a TOML literal, else the plain string
    return args


# --- building -------------------------------------------------------------------------------------


def create_kwargs(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The create_model keyword arguments of ``name``: the 32-px ones, then --timm-args."""
    _, base = input_of(name)
    return {**base, **parse_timm_args(options.get("timm_args"))}


def _create(name: str, num_classes: int, pretrained: bool, kwargs: Mapping[str, Any]) -> Any:
    import timm

    try:
        return timm.create_model(name, num_classes=num_classes, pretrained=pretrained, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err) and not pretrained:
            raise UsageError(
                f"timm model {name!r} does not take {_one_line(err).split('argument')[-1].strip()}: check --timm-args"
            ) from None
        raise


def check_args_build(name: str, options: Mapping[str, Any]) -> None:
    """Build ``name`` with its --timm-args on the meta device (no memory, no weights): an
    argument the architecture does not take is a usage error before any run folder exists."""
    import torch

    kwargs = create_kwargs(name, options)
    size, _ = input_of(name)
    try:
        with torch.device("meta"):
            model = _create(name, 10, False, kwargs)
            model(torch.zeros(2, 3, size, size))
    except UsageError:
        raise
    except Exception as err:
        raise UsageError(
            f"timm model {name!r} does not build with --timm-args {options.get('timm_args')!r}: "
            f"{type(err).__name__}: {_one_line(err)}"
        ) from None


def build(name: str, num_classes: int, options: Mapping[str, Any]) -> Any:
    """The model ``name`` for ``num_classes`` classes, with --weights applied."""
    kwargs = create_kwargs(name, options)
    weights = str(options.get("weights") or "none")
    if weights == "imagenet":
        return _pretrained(name, num_classes, kwargs)
    model = _create(name, num_classes, False, kwargs)
    if weights != "none":
        load_file(model, Path(weights).expanduser())
    return model


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    message = lines[0] if lines else type(err).__name__
    return message if len(message) <= 200 else message[:197] + "..."


def has_pretrained(name: str) -> bool:
    from timm.models import is_model_pretrained

    return bool(is_model_pretrained(name))


def _pretrained(name: str, num_classes: int, kwargs: Mapping[str, Any]) -> Any:
    """timm's own pretrained weights (the Hugging Face Hub, cached in its cache folder)."""
    if not has_pretrained(name):
        raise WeightsError(f"timm has no pretrained weights for {name!r}; pass --weights PATH or --weights none")
    unreachable = _download_blocked(name)
    if unreachable:
        raise WeightsError(
            f"cannot download timm's ImageNet weights for {name!r} ({unreachable}); offline, pass --weights PATH "
            "for a local state dict, or --weights none to train from scratch"
        )
    try:
        return _create(name, num_classes, True, kwargs)
    except (OSError, ConnectionError, TimeoutError) as err:  # huggingface_hub's offline/HTTP errors are OSErrors
        raise WeightsError(
            f"cannot download timm's ImageNet weights for {name!r} ({type(err).__name__}: {_one_line(err)}); "
            "offline, pass --weights PATH for a local state dict, or --weights none to train from scratch"
        ) from None
    except RuntimeError as err:  # a cached file that does not load, a head or shape mismatch
        raise WeightsError(
            f"timm's ImageNet weights for {name!r} were refused ({_one_line(err)}); pass --weights PATH or "
            "--weights none"
        ) from None


def _download_blocked(name: str) -> str | None:
    """Why timm could not fetch ``name``'s weights now (no cached copy, host unreachable), or
    None. Offline, huggingface_hub retries with back-off for most of a minute before it
    gives up; one connection attempt answers in seconds."""
    import socket
    from urllib.parse import urlparse

    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        for filename in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors"):
            if filename and isinstance(try_to_load_from_cache(repo, filename), str):
                return None
        url = constants.ENDPOINT
    elif cfg.url:
        import torch

        if (Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]).is_file():
            return None
        url = cfg.url
    else:
        return None
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=DOWNLOAD_PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"{host} unreachable: {err.strerror or err}"
    return None


def read_state_dict(path: Path) -> dict[str, Any]:
    """A state dict from ``path`` (torch.load with weights_only=True, or safetensors), with
    the usual wrappers (``state_dict``, ``model``, EMA) and ``module.`` prefixes removed."""
    from timm.models import load_state_dict

    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; {WEIGHTS_HELP}")
    try:
        state = load_state_dict(str(path), use_ema=False, weights_only=True)
    except OSError as err:
        raise WeightsError(f"cannot read weights file {path}: {err.strerror or err}") from None
    except Exception as err:  # truncated zip, garbage bytes, pickled objects refused by weights_only
        raise WeightsError(
            f"cannot read weights file {path}: it is truncated, tampered or not a state dict "
            f"({type(err).__name__} from torch.load(weights_only=True))"
        ) from None
    return _tensors_only(state, path)


def _tensors_only(state: Any, path: Path) -> dict[str, Any]:
    import torch

    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict (parameter names mapped to tensors)")
    return dict(state)


def _classifier_prefixes(model: Any) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    heads = cfg.get("classifier") or ()
    return tuple(heads) if isinstance(heads, (list, tuple)) else (heads,)


def load_file(model: Any, path: Path) -> None:
    """Load a local state dict into ``model``.

    A state dict of this very model (a cifarfw checkpoint, ``torch.save(model.state_dict())``)
    loads as it is. Any other (an ImageNet checkpoint of the same architecture) first goes
    through the architecture's own ``checkpoint_filter_fn`` (timm's conversion of official
    weights: resampled position embeddings, renamed keys); a classifier of another class
    count is then left out and stays freshly initialised. Every other mismatch is refused,
    naming the first key.
    """
    import sys

    import torch

    state = read_state_dict(path)
    own = model.state_dict()
    if set(state) != set(own) or any(tuple(state[k].shape) != tuple(own[k].shape) for k in own):
        filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            try:
                state = _tensors_only(filter_fn(state, model), path)
            except WeightsError:
                raise
            except Exception:  # not an official checkpoint either: the checks below name the mismatch
                pass
        heads = _classifier_prefixes(model)
        for key in [k for k in state if k.startswith(heads) and k in own and state[k].shape != own[k].shape]:
            del state[key]
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise WeightsError(
            f"weights file {path} is not a state dict of this model: unexpected key {unexpected[0]!r}"
            f"{f' (and {len(unexpected) - 1} more)' if len(unexpected) > 1 else ''}"
        )
    heads = _classifier_prefixes(model)
    missing = [k for k in own if k not in state and not k.startswith(heads)]
    if missing:
        raise WeightsError(f"weights file {path} lacks {missing[0]!r}; it is not a complete state dict of this model")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise WeightsError(
                f"weights file {path} has {key} of shape {list(tensor.shape)}, but this model's is "
                f"{list(own[key].shape)}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"weights file {path} holds non-finite values in {key}; it is corrupt")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
