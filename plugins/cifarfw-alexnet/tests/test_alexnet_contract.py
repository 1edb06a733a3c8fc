"""The core's contract test kit, run against the alexnet plugin (random weights: no download)."""

from __future__ import annotations

from alexnet_helpers import requires_torch_trainer

from cifarfw.testing import check_model_plugin


@requires_torch_trainer
def test_alexnet_meets_the_plugin_contract(tmp_path, isolated):
    report = check_model_plugin(
        "alexnet",
        options={"weights": "none"},
        runs_root=tmp_path / "runs",
        expected_params={"total": 44_428_106, "trainable": 4_205_578},
        learn_batch=8,
        learn_steps=6,
        train_size=20,
        test_size=10,
        skip=("trainer-run",),  # test_alexnet_run.py trains through the torch trainer already
    )
    assert report.ok, str(report)
