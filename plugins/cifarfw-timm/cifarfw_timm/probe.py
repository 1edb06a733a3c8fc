"""Find, for each timm architecture, the smallest input it builds for and the arguments it needs.

``python -m cifarfw_timm.probe [--only NAME ...] [--jobs N]`` rewrites ``inputs.json`` for
the installed timm (run it after upgrading timm; tests/test_timm_names.py says when the
table and the library disagree). Each model is built on torch's meta device, so even a
billion-parameter ViT costs no memory and well under a second, and a forward pass in
training and evaluation mode must give ``(2, 10)``. The attempts, first that works wins:

1. 32 px with ``img_size=32``: architectures with learned or relative position tables
   (ViT, DeiT, BEiT, EVA, Swin, MaxViT, MLP-Mixer, ...) size them for 32 px, and windowed
   ones shrink their windows to the smaller feature maps;
2. 32 px as built (convnets: global pooling makes any side work);
3. growing sides with ``img_size`` (when the constructor takes it) and without, up to the
   model's own default side: models whose stems or fixed pooling need more than 32 px
   (Inception's 75, EfficientFormer's fixed 7x7 attention at 224, patch-14 ViTs at 42, ...).

A model that runs but gives no ``(2, 10)`` scores is a feature encoder (it ignores
``num_classes``); it goes to the table's ``unsupported`` part with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

# Sides tried after 32, smallest first: multiples of the usual patch sizes (14, 16) and strides.
SIDES = (42, 48, 56, 64, 70, 75, 84, 96, 112, 128, 144, 160, 192, 224, 256, 288, 320, 384, 448, 512)
TABLE_PATH = Path(__file__).with_name("inputs.json")


def _try(name: str, side: int, kwargs: dict[str, Any]) -> str | None:
    """None when ``name`` builds with ``kwargs`` and maps a (2, 3, side, side) batch to (2, 10)
    in training and evaluation mode; else why not (``shape (2, 1, 5120)``, an exception)."""
    import timm
    import torch

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = timm.create_model(name, num_classes=10, pretrained=False, **kwargs)
            x = torch.zeros(2, 3, side, side)
            for training in (True, False):
                model.train(training)
                shape = tuple(model(x).shape)
                if shape != (2, 10):
                    return f"shape {shape}"
    except Exception as err:
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
    return None


def _takes_img_size(name: str) -> bool:
    import timm
    import torch

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            timm.create_model(name, num_classes=10, pretrained=False, img_size=224)
    except TypeError as err:
        return "img_size" not in str(err)
    except Exception:
        return True
    return True


def _default_side(name: str) -> int:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    size = getattr(cfg, "input_size", None) or (3, 224, 224)
    return int(max(size[1:]))


def _attempts(name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    yield 32, {"img_size": 32}
    yield 32, {}
    takes = _takes_img_size(name)
    default = _default_side(name)
    for side in [s for s in SIDES if s < default] + [default]:
        if takes:
            yield side, {"img_size": side}
        yield side, {}


def probe(name: str) -> tuple[int, dict[str, Any]] | str:
    """(input side, create_model arguments) for ``name``, or why it cannot be trained here.

    A model that runs but returns no (batch, 10) scores ignores ``num_classes``: a feature
    encoder without a classifier (timm's ``*_enc`` towers of vision-language models); no
    side changes that, so the search stops there.
    """
    why = "no attempt"
    for side, kwargs in _attempts(name):
        why = _try(name, side, kwargs) or ""
        if not why:
            return side, kwargs
        if why.startswith("shape "):
            return f"it outputs features of {why}, not class scores (an encoder without a classifier)"
    return f"it builds for no input side up to its own ({why})"


def _probe_one(name: str) -> tuple[str, tuple[int, dict[str, Any]] | str, float]:
    start = time.perf_counter()
    return name, probe(name), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="probe these names and merge them into the table")
    parser.add_argument("--jobs", type=int, default=1, help="processes")
    parser.add_argument("--out", type=Path, default=TABLE_PATH)
    args = parser.parse_args(argv)
    import timm

    names = list(args.only) if args.only else list(timm.list_models())
    models: dict[str, list[Any]] = {}
    unsupported: dict[str, str] = {}
    if args.only and args.out.exists():
        previous = json.loads(args.out.read_text(encoding="utf-8"))
        models, unsupported = previous["models"], previous.get("unsupported", {})
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for i, (name, found, seconds) in enumerate(pool.map(_probe_one, names, chunksize=4)):
            print(f"{i + 1}/{len(names)} {name}: {found!r} ({seconds:.1f} s)", file=sys.stderr, flush=True)
            models.pop(name, None)
            unsupported.pop(name, None)
            if isinstance(found, str):
                unsupported[name] = found
            else:
                side, kwargs = found
                models[name] = [side, kwargs] if kwargs else [side]
    write_table(args.out, timm.__version__, models, unsupported)
    if unsupported:
        print(f"cannot be trained: {len(unsupported)}: {' '.join(sorted(unsupported))}", file=sys.stderr)
    return 0


def write_table(path: Path, version: str, models: dict[str, list[Any]], unsupported: dict[str, str]) -> None:
    """inputs.json, one model a line (diffs after a timm upgrade stay readable)."""
    lines = ["{", f' "timm": {json.dumps(version)},', ' "unsupported": {']
    lines.append(",\n".join(f"  {json.dumps(k)}: {json.dumps(unsupported[k])}" for k in sorted(unsupported)))
    lines += [" },", ' "models": {']
    lines.append(",\n".join(f"  {json.dumps(k)}: {json.dumps(models[k])}" for k in sorted(models)))
    lines += [" }", "}"]
    path.write_text("\n".join(line for line in lines if line) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
