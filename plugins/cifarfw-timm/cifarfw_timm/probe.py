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
SIDES = (42, 48, 56, 64, 70, 84, 96, 112, 128, 144, 160, 192, 224, 256, 288, 320, 384, 448, 512)
TABLE_PATH = Path(__file__).with_name("inputs.json")


def _works(name: str, side: int, kwargs: dict[str, Any]) -> bool:
    import timm
    import torch

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = timm.create_model(name, num_classes=10, pretrained=False, **kwargs)
            x = torch.zeros(2, 3, side, side)
            for training in (True, False):
                model.train(training)
                if tuple(model(x).shape) != (2, 10):
                    return False
    except Exception:
        return False
    return True


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


def probe(name: str) -> tuple[int, dict[str, Any]] | None:
    """(input side, create_model arguments) for ``name``, or None when nothing works."""
    for side, kwargs in _attempts(name):
        if _works(name, side, kwargs):
            return side, kwargs
    return None


def _probe_one(name: str) -> tuple[str, tuple[int, dict[str, Any]] | None, float]:
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
    if args.only and args.out.exists():
        models = json.loads(args.out.read_text(encoding="utf-8"))["models"]
    failed = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for i, (name, found, seconds) in enumerate(pool.map(_probe_one, names, chunksize=4)):
            print(f"{i + 1}/{len(names)} {name}: {found} ({seconds:.1f} s)", file=sys.stderr, flush=True)
            if found is None:
                failed.append(name)
                models.pop(name, None)
                continue
            side, kwargs = found
            models[name] = [side, kwargs] if kwargs else [side]
    payload = {"timm": timm.__version__, "models": dict(sorted(models.items()))}
    text = "{\n" + f' "timm": {json.dumps(payload["timm"])},\n "models": {{\n'
    text += ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in payload["models"].items())
    args.out.write_text(text + "\n }\n}\n", encoding="utf-8")
    if failed:
        print(f"no input side works for {len(failed)}: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
