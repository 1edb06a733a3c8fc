"""run.json's ``cost`` from the Keras trainer: the per-layer MAC count checked against a
hand count of the study's Keras CNN."""

from __future__ import annotations

import numpy as np

from cifarfw_keras import cost


def study_keras_cnn_macs_by_hand() -> int:
    """'valid' 3x3 convolutions: H_out * W_out * C_out * C_in * k * k; 2x2 pools; dense: in * out."""
    conv1 = 30 * 30 * 32 * 3 * 3 * 3  # 32 -> 30, pool -> 15
    conv2 = 13 * 13 * 64 * 32 * 3 * 3  # 15 -> 13, pool -> 6
    conv3 = 4 * 4 * 128 * 64 * 3 * 3  # 6 -> 4, pool -> 2: flatten 2*2*128 = 512
    dense = 512 * 64 + 64 * 10
    return conv1 + conv2 + conv3 + dense


def test_the_study_keras_cnn_s_macs_match_a_hand_count():
    from cifarfw_keras_cnn.model import build

    model = build(10)
    assert study_keras_cnn_macs_by_hand() == 5_105_664
    assert cost.count_macs(model) == 5_105_664


def test_an_unknown_kernel_layer_makes_the_count_null_and_is_named():
    from cifarfw_keras._tf import keras

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2DTranspose(4, 3), keras.layers.Flatten()])
    assert cost.count_macs(model) is None
    assert cost._uncounted(model)[0].endswith("(Conv2DTranspose)")


def test_throughput_on_a_small_test_set_measures_what_there_is():
    from cifarfw_keras._tf import keras

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    speed = cost.throughput(model, np.zeros((30, 8, 8, 3), np.float32))
    assert speed["batch_256_size"] == 30 and speed["batch_1_images"] == 30
    assert speed["batch_1_images_per_s"] > 0


def test_depthwise_and_separable_convolutions_match_a_hand_count():
    """MobileNet's layers: a depthwise 3x3 costs H*W*C*9 (Keras 3 names its kernel `kernel`), a
    separable one its depthwise part plus the 1x1 pointwise H*W*C_in*C_out."""
    from cifarfw_keras._tf import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.DepthwiseConv2D(3, padding="same"),  # 8*8*4*9
            keras.layers.SeparableConv2D(6, 3, padding="same"),  # 8*8*4*9 + 8*8*4*6
        ]
    )
    assert cost.count_macs(model) == 8 * 8 * 4 * 9 + 8 * 8 * 4 * 9 + 8 * 8 * 4 * 6


def test_a_failing_measurement_is_recorded_not_raised(capsys):
    assert cost.measured(lambda: 1 / 0) == {"error": "ZeroDivisionError: division by zero"}
    assert "cost was not measured" in capsys.readouterr().err
