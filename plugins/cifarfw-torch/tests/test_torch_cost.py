"""run.json's ``cost`` from the torch trainer: MACs checked against a hand count of the
study's CNN, and the keys a real run records."""

from __future__ import annotations

import torch

from cifarfw_torch import cost


def study_cnn_macs_by_hand() -> int:
    """conv: H_out * W_out * C_out * C_in * k * k ('same' padding, 2x2 pools between); dense: in * out."""
    conv1 = 32 * 32 * 32 * 3 * 3 * 3
    conv2 = 16 * 16 * 64 * 32 * 3 * 3
    conv3 = 8 * 8 * 128 * 64 * 3 * 3
    dense = 2048 * 120 + 120 * 84 + 84 * 10
    return conv1 + conv2 + conv3 + dense


def test_the_study_cnn_s_macs_match_a_hand_count():
    from cifarfw_torch_cnn.model import StudyCNN

    model = StudyCNN(10)
    assert study_cnn_macs_by_hand() == 10_578_600
    assert cost.count_macs(model, torch.zeros(1, 3, 32, 32)) == 10_578_600
    assert cost.count_macs(model, torch.zeros(4, 3, 32, 32)) == 10_578_600  # per image
    assert model.training  # the count leaves the model's mode as it was


def test_throughput_on_a_small_test_set_measures_what_there_is():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    speed = cost.throughput(model, torch.zeros(40, 3, 8, 8))
    assert speed["batch_256_size"] == 40 and speed["batch_1_images"] == 40
    assert speed["batch_1_images_per_s"] > 0 and speed["batch_256_images_per_s"] > 0
