"""Distributed runs: the core reads the launcher's environment; the torch plugin hands over to torchrun."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cifarfw.errors import UsageError
from cifarfw.runner import world_from_env
from cifarfw.testing import assert_one_line_error


def test_single_process_by_default(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TF_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    assert world_from_env() == (0, 1, 0)


def test_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world_from_env() == (3, 4, 1)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(UsageError, match="RANK/WORLD_SIZE"):
        world_from_env()


@pytest.mark.parametrize(
    ("cluster", "task", "expected"),
    [
        ({"worker": ["h:1", "h:2"]}, {"type": "worker", "index": 0}, (0, 2, 0)),
        ({"worker": ["h:1", "h:2"]}, {"type": "worker", "index": 1}, (1, 2, 0)),
        ({"chief": ["h:0"], "worker": ["h:1"]}, {"type": "chief", "index": 0}, (0, 2, 0)),
        ({"chief": ["h:0"], "worker": ["h:1"]}, {"type": "worker", "index": 0}, (1, 2, 0)),
    ],
)
def test_tf_config(monkeypatch, cluster, task, expected):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    assert world_from_env() == expected


def torch_launch():
    return pytest.importorskip("cifarfw_torch.launch", reason="cifarfw-torch is not installed")


def test_drop_options_removes_launcher_flags():
    args = ["run", "--plugin", "x", "--nproc-per-node", "2", "--nnodes=1", "--epochs", "3", "--rdzv-endpoint", "h:1"]
    assert torch_launch().drop_options(args, {"--nproc-per-node", "--nnodes", "--rdzv-endpoint"}) == [
        "run", "--plugin", "x", "--epochs", "3",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("nnodes", "endpoint", "rendezvous"),
    [(1, None, ["--standalone"]), (2, "h:29400", ["--rdzv-backend=c10d", "--rdzv-endpoint=h:29400"])],
)
def test_torch_launch_runs_torchrun_without_the_launcher_flags(monkeypatch, nnodes, endpoint, rendezvous):
    launch = torch_launch()
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 7)
    argv = ["run", "--plugin", "torch-cnn", "--nproc-per-node=4", "--nnodes", str(nnodes), "--epochs", "2"]
    if endpoint:
        argv += ["--rdzv-endpoint", endpoint]
    assert launch.launch(argv, 4, nnodes, endpoint) == 7  # torchrun's exit code, handed back
    assert calls == [
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=4", f"--nnodes={nnodes}", *rendezvous,
         "-m", "cifarfw", "run", "--plugin", "torch-cnn", "--epochs", "2"],
    ]  # fmt: skip


def test_the_torch_trainer_declares_the_launcher(monkeypatch):
    torch_launch()
    from cifarfw_torch.plugin import launch

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert launch(["run", "--plugin", "torch-cnn", "--nproc-per-node", "2"], 2, 1, None) == 0
    assert calls[0][-5:] == ["-m", "cifarfw", "run", "--plugin", "torch-cnn"]


def test_torch_launch_without_torch_is_a_usage_error(monkeypatch):
    launch = torch_launch()
    monkeypatch.setattr(launch, "_has_module", lambda name: False)
    monkeypatch.setattr(subprocess, "call", lambda cmd: pytest.fail("nothing may start"))
    with pytest.raises(UsageError, match="needs torch installed"):
        launch.launch(["run", "--plugin", "torch-cnn"], 2, 1, None)


def test_launcher_flag_errors(cli, entry_points):
    entry_points(("fake", "fakes:FAKE_PLUGIN"))
    code, _, err = cli("run", "--plugin", "fake", "--nnodes", "2")
    assert_one_line_error(code, err, "--nnodes and --rdzv-endpoint go with --nproc-per-node")
    code, _, err = cli("run", "--plugin", "fake", "--nproc-per-node", "2", "--nnodes", "2")
    assert_one_line_error(code, err, "needs --rdzv-endpoint")
    code, _, err = cli("run", "--plugin", "fake", "--nproc-per-node", "0")
    assert_one_line_error(code, err, "must be positive")


def test_launch_is_checked_once_before_torchrun(cli, entry_points, monkeypatch):
    entry_points(("fake", "fakes:FAKE_PLUGIN"))
    launched = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, *a, **k: launched.append(cmd) or 0)  # torchrun
    code, _, err = cli("run", "--plugin", "fake", "--nproc-per-node", "2")
    assert_one_line_error(code, err, "--nproc-per-node launches torch plugins through torchrun", "numpy plugin")
    code, _, err = cli("run", "--plugin", "fake", "--nproc-per-node", "2", "--epochs", "0")
    assert_one_line_error(code, err, "epochs must be a positive integer")
    assert launched == []
    assert "WORLD_SIZE" not in __import__("os").environ  # the check left the environment as it was


def test_torch_launch_refuses_an_indivisible_batch_before_starting(cli):
    from cifarfw.plugins import PluginHost

    host = PluginHost()
    if host.plugins.get("torch-cnn") is None or host.plugins["torch-cnn"].status != "ok":
        pytest.skip("torch-cnn is not installed")
    code, _, err = cli(
        "run", "--plugin", "torch-cnn", "--dataset", "synthetic", "--nproc-per-node", "2", "--batch-size", "63"
    )
    assert_one_line_error(code, err, "63")
    assert code == 2


def test_a_dry_run_with_nproc_per_node_checks_but_launches_nothing(cli, entry_points, monkeypatch, tmp_path):
    entry_points(("torch-cnn", "cifarfw_torch_cnn.plugin"), ("torch", "cifarfw_torch.plugin"))
    monkeypatch.setattr(subprocess, "call", lambda cmd, *a, **k: pytest.fail("a dry run must not launch"))
    code, out, err = cli(
        "run", "--plugin", "torch-cnn", "--nproc-per-node", "2", "--dry-run", "--runs-root", str(tmp_path)
    )
    assert code == 0, err
    assert "# torch-cnn / torch-cnn, seed 0" in out and not any(tmp_path.iterdir())
