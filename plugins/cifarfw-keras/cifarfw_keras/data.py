"""tf.data pipelines from the in-memory uint8 arrays, augmenting whole batches in TensorFlow ops.

The augmentation has the torch trainer's semantics: a random crop after zero padding
(offsets drawn per image), a random horizontal flip, a brightness factor in [1-b, 1+b] on
0-1 pixels (clipped), then resizing to the model's input size and normalising with the
model's mean and std.

Every random draw is stateless, derived from (seed, epoch, step) only: an epoch's order
and augmentation do not depend on what ran before, so a resumed run sees exactly the
batches an uninterrupted one would have seen.

Both pipelines run with fixed parallelism and prefetch buffers, tf.data's autotuner off:
each autotuned iterator keeps a tuning thread that sleeps between rounds, and destroying the
iterator waited for that sleep to end. Keras replaces the training iterator at the end of
every epoch, inside the epoch, and the evaluation opens one per epoch, so 5 of 12 study-recipe
epochs stood still for 8-10 s, both CPUs idle: the "epochs twice as slow" of issue 19 (found
with tools/stall_watch.py, in ``IteratorResource``'s destructor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cifarfw_keras import runtime
from cifarfw_keras._tf import tf

# Cache the preprocessed test set only while it stays small (float32 of 224x224 inputs would not).
TEST_CACHE_LIMIT_BYTES = 512 * 2**20
_STEP_STRIDE = 1 << 24  # step numbers within an epoch stay below this in the per-batch seed
PREFETCH_BATCHES = 2  # ready batches kept ahead of the model (the step, not the input, is the bottleneck)


def _pipeline_threads() -> int:
    """Parallel map calls: one per CPU this process may use (capped: the model needs them more)."""
    return max(1, min(runtime.allowed_cpus(), 8))


def untuned(dataset: Any) -> Any:
    """``dataset`` with tf.data's autotuner off (see the module's docstring for why)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


@dataclass(frozen=True)
class AugmentSettings:
    crop_padding: int = 0
    flip: bool = False
    brightness: float = 0.0

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip or self.brightness > 0


def batch_seed(seed: int | Any, epoch: int | Any, step: int | Any) -> Any:
    """The stateless seed (shape [2], int64) of one training batch."""
    seed = tf.cast(seed, tf.int64)
    return tf.stack([seed, tf.cast(epoch, tf.int64) * _STEP_STRIDE + tf.cast(step, tf.int64)])


def augment_batch(images: Any, seed: Any, settings: AugmentSettings) -> Any:
    """uint8 (N, H, W, C) -> float32 in [0, 1], randomly cropped, flipped and brightened."""
    crop_seed, flip_seed, bright_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
    x = tf.convert_to_tensor(images)
    n = tf.shape(x)[0]
    height, width = int(x.shape[1]), int(x.shape[2])
    pad = int(settings.crop_padding)
    if pad > 0:
        # Zero-pad the batch, then gather each image's rows and columns at its own offset.
        x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        offsets = tf.random.stateless_uniform([n, 2], crop_seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
        rows = offsets[:, :1] + tf.range(height)[None, :]
        cols = offsets[:, 1:] + tf.range(width)[None, :]
        x = tf.gather(x, rows, axis=1, batch_dims=1)
        x = tf.gather(x, cols, axis=2, batch_dims=1)
    if settings.flip:
        flipped = tf.random.stateless_uniform([n], flip_seed) < 0.5
        x = tf.where(flipped[:, None, None, None], tf.reverse(x, axis=[2]), x)
    x = tf.cast(x, tf.float32) * (1.0 / 255.0)
    if settings.brightness > 0:
        b = float(settings.brightness)
        factor = tf.random.stateless_uniform([n, 1, 1, 1], bright_seed, minval=1.0 - b, maxval=1.0 + b)
        x = tf.clip_by_value(x * factor, 0.0, 1.0)
    return x


def to_model_input(x01: Any, input_size: int, mean: Sequence[float], std: Sequence[float]) -> Any:
    """0-1 float images -> resized to ``input_size`` and normalised with the model's statistics."""
    if int(x01.shape[1]) != input_size or int(x01.shape[2]) != input_size:
        x01 = tf.image.resize(x01, [input_size, input_size], method="bilinear")
    mean_t = tf.constant(mean, tf.float32)
    std_t = tf.constant(std, tf.float32)
    if any(m != 0 for m in mean):
        x01 = x01 - mean_t
    if any(s != 1 for s in std):
        x01 = x01 / std_t
    return x01


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Batches per epoch, keeping the last partial batch (as Keras's own fit does)."""
    return max(1, math.ceil(count / batch_size))


def train_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    batch_size: int,
    seed: int,
    epoch: Any,
    augment: AugmentSettings,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Any:
    """Batches of (model input, one-hot label) for the epoch held in the int64 variable
    ``epoch``: the trainer sets it before Keras opens each epoch's iterator."""
    count = len(labels)
    steps = steps_per_epoch(count, batch_size)
    x_all = tf.constant(images)
    y_all = tf.constant(labels.astype(np.int32))

    def epoch_batches(_: Any) -> Any:
        current = epoch.read_value()
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int32), seed=tf.stack([tf.constant(seed, tf.int64), current])
        )
        index_batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()
        return index_batches.map(lambda step, index: (current, step, index))

    def load(current: Any, step: Any, index: Any) -> tuple[Any, Any]:
        x = tf.gather(x_all, index)
        if augment.active:
            x = augment_batch(x, batch_seed(seed, current, step), augment)
        else:
            x = tf.cast(x, tf.float32) * (1.0 / 255.0)
        y = tf.one_hot(tf.gather(y_all, index), num_classes)
        return to_model_input(x, input_size, mean, std), y

    dataset = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).flat_map(epoch_batches)
    dataset = dataset.map(load, num_parallel_calls=_pipeline_threads(), deterministic=True)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return untuned(dataset.prefetch(PREFETCH_BATCHES))


def test_dataset(
    images: np.ndarray,
    *,
    batch_size: int,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Any:
    """Batches of model input for evaluation, in order; cached when small enough."""
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
    dataset = dataset.map(
        lambda x: to_model_input(tf.cast(x, tf.float32) * (1.0 / 255.0), input_size, mean, std),
        num_parallel_calls=_pipeline_threads(),
        deterministic=True,
    )
    if len(images) * input_size * input_size * images.shape[-1] * 4 <= TEST_CACHE_LIMIT_BYTES:
        dataset = dataset.cache()
    return untuned(dataset.prefetch(PREFETCH_BATCHES))
