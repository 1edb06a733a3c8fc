"""The batch pipeline: shapes, value ranges, flips, crop shifts, brightness bounds, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cifarfw.config import Augment
from cifarfw_torch.pipeline import BatchPipeline, DeviceSplit, EpochDraw, draw_epoch
from cifarfw_torch.runtime import epoch_generator

CPU = torch.device("cpu")
IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # mean, std: output = pixel / 255


@pytest.fixture
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(1, 256, size=(12, 32, 32, 3), dtype=np.uint8)  # no zeros: padding is recognisable


@pytest.fixture
def split(images) -> DeviceSplit:
    return DeviceSplit.from_numpy(images, np.arange(len(images)) % 10, CPU)


def pipeline(augment: Augment, size: int = 32, stats=IDENTITY, channels_last: bool = True) -> BatchPipeline:
    return BatchPipeline(stats[0], stats[1], size, augment, CPU, channels_last)


def fixed_draw(n: int, dy=0, dx=0, flip=False, brightness=1.0) -> EpochDraw:
    full = lambda v, dtype: torch.full((n,), v, dtype=dtype)  # noqa: E731
    return EpochDraw(
        torch.arange(n),
        full(dy, torch.int64),
        full(dx, torch.int64),
        full(flip, torch.bool),
        full(brightness, torch.float),
    )


def as_pixels(batch: torch.Tensor) -> np.ndarray:
    """Pipeline output with identity stats back to uint8 NHWC."""
    return np.rint(batch.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def test_packing_round_trips_and_eval_normalises_with_model_stats(images, split):
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    x = pipeline(Augment(), stats=(mean, std)).eval_batch(split, torch.arange(len(images)))
    expected = (images.astype(np.float32) / 255 - np.array(mean, np.float32)) / np.array(std, np.float32)
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.float32
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_train_batch_shapes_layout_labels_and_range(split):
    augment = Augment(crop_padding=4, flip=True, brightness=0.2)
    draw = draw_epoch(len(split), augment, epoch_generator(0, 1), CPU)
    x, y = pipeline(augment).train_batch(split, draw.batch(0, 8))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, split.labels[draw.order[:8]])
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0  # brightness clips at white
    x2, _ = pipeline(augment, channels_last=False).train_batch(split, draw.batch(0, 8))
    assert x2.is_contiguous() and torch.equal(x, x2)


def test_flip_mirrors_every_image(images, split):
    x, _ = pipeline(Augment(0, True, 0)).train_batch(split, fixed_draw(len(images), flip=True))
    np.testing.assert_array_equal(as_pixels(x), images[:, :, ::-1, :])
    plain, _ = pipeline(Augment(0, True, 0)).train_batch(split, fixed_draw(len(images), flip=False))
    np.testing.assert_array_equal(as_pixels(plain), images)
    mirrored = pipeline(Augment()).eval_batch(split, torch.arange(len(images)), flip=True)
    np.testing.assert_array_equal(as_pixels(mirrored), images[:, :, ::-1, :])


@pytest.mark.parametrize(("dy", "dx"), [(2, -3), (-4, 4), (0, 1)])
def test_crop_shifts_content_and_pads_with_zeros(images, split, dy, dx):
    x, _ = pipeline(Augment(4, False, 0)).train_batch(split, fixed_draw(len(images), dy=dy, dx=dx))
    out = as_pixels(x)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))  # zero padding, then a 32x32 window
    np.testing.assert_array_equal(out, padded[:, 4 + dy : 36 + dy, 4 + dx : 36 + dx])
    assert (out == 0).all(axis=-1).any() == (dy != 0 or dx != 0)


def test_crop_and_flip_together(images, split):
    x, _ = pipeline(Augment(4, True, 0)).train_batch(split, fixed_draw(len(images), dy=1, dx=2, flip=True))
    padded = np.pad(images[:, :, ::-1], ((0, 0), (4, 4), (4, 4), (0, 0)))
    np.testing.assert_array_equal(as_pixels(x), padded[:, 5:37, 6:38])  # the mirrored image, shifted


def test_brightness_factors_within_bounds_and_applied_per_image(images, split):
    b = 0.2
    draw = draw_epoch(4000, Augment(0, False, b), epoch_generator(3, 1), CPU)
    assert float(draw.brightness.min()) >= 1 - b and float(draw.brightness.max()) <= 1 + b
    assert float(draw.brightness.max() - draw.brightness.min()) > 1.5 * b  # really spread over the range
    factors = torch.linspace(1 - b, 1 + b, len(images))
    draw = fixed_draw(len(images))
    draw.brightness = factors
    x, _ = pipeline(Augment(0, False, b)).train_batch(split, draw)
    expected = np.minimum(images.astype(np.float32) * factors.numpy()[:, None, None, None], 255) / 255
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), expected, atol=1e-6)


def test_resize_to_model_input_size(split):
    x, _ = pipeline(Augment(), size=64).train_batch(split, fixed_draw(len(split)))
    assert x.shape == (len(split), 3, 64, 64)
    plain = pipeline(Augment(0, False, 0)).eval_batch(split, torch.arange(len(split)))
    up = pipeline(Augment(0, False, 0), size=64).eval_batch(split, torch.arange(len(split)))
    assert abs(float(up.mean()) - float(plain.mean())) < 1e-3  # bilinear keeps the mean


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("flip", [False, True])
def test_16_bit_eval_batch_resizes_uint8_close_to_the_float_path(split, dtype, flip):
    """The feature cache's input path (uint8 resize, then normalisation in 16 bits) is the
    float path up to rounding: whole gray levels after the resize, 16-bit normalisation."""
    pipe = pipeline(Augment(), size=224, stats=IMAGENET)
    index = torch.arange(len(split))
    reference = pipe.eval_batch(split, index, flip=flip)  # float32 throughout
    x = pipe.eval_batch(split, index, flip=flip, dtype=dtype)
    assert x.dtype == dtype and x.shape == (len(split), 3, 224, 224)
    assert x.is_contiguous(memory_format=torch.channels_last)
    error = (x.float() - reference).abs()
    level = 1 / (255 * 0.224)  # one gray level in normalised units
    assert float(error.max()) < 0.06  # half a level of resize rounding plus 16-bit rounding near |x| = 2.6
    assert float(error.pow(2).mean().sqrt()) < 0.8 * level  # measured: 0.6 (bf16), 0.3 (fp16)
    assert not torch.equal(x, pipe.eval_batch(split, index, flip=not flip, dtype=dtype))


def test_normalisation_of_channels_last_rows_equals_the_broadcast(split):
    """The vectorised per-row normalisation computes exactly the per-channel broadcast."""
    pipe = pipeline(Augment(), stats=IMAGENET)
    x = torch.rand(4, 3, 8, 8).mul(255).contiguous(memory_format=torch.channels_last)
    expected = x * pipe.scale - pipe.shift
    assert torch.equal(pipe._normalise_(x.clone(memory_format=torch.channels_last)), expected)
    assert torch.equal(pipe._normalise_(x.contiguous()), expected)  # the NCHW fallback


def test_epoch_draws_depend_only_on_seed_and_epoch():
    augment = Augment()
    a = draw_epoch(100, augment, epoch_generator(7, 2), CPU)
    b = draw_epoch(100, augment, epoch_generator(7, 2), CPU)
    c = draw_epoch(100, augment, epoch_generator(7, 3), CPU)
    for name in ("order", "dy", "dx", "flip", "brightness"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.order, c.order)
    assert sorted(a.order.tolist()) == list(range(100))
    assert int(a.dy.min()) == -4 and int(a.dy.max()) == 4
    assert 20 < int(a.flip.sum()) < 80
