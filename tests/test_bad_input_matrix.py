"""The bad-input matrix: each case gives one line, its documented exit code, no traceback,
and leaves every file already written exactly as it was (docs/exit-codes.md)."""

from __future__ import annotations

import errno
import hashlib
import json
import pickle
from pathlib import Path

import pytest
from test_data import Exploit, write_cifar

from cifarfw.testing import assert_one_line_error

FAKE = ("fake", "fakes:FAKE_PLUGIN")
BROKEN = ("broken", "plugins_fixture.raises_on_import")


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Files the cases point at: data folders, config files, a finished and a stopped run."""
    base = tmp_path_factory.mktemp("matrix")
    good = write_cifar(base / "good" / "cifar-10-batches-py")
    truncated = write_cifar(base / "truncated" / "cifar-10-batches-py")
    (truncated / "data_batch_2").write_bytes((good / "data_batch_2").read_bytes()[:4000])
    exploit = write_cifar(base / "exploit" / "cifar-10-batches-py")
    (exploit / "data_batch_1").write_bytes(pickle.dumps({"data": Exploit()}, protocol=2))
    missing = write_cifar(base / "missing" / "cifar-10-batches-py")
    (missing / "test_batch").unlink()
    notdict = write_cifar(base / "notdict" / "cifar-10-batches-py")
    (notdict / "data_batch_5").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    (base / "empty").mkdir()
    (base / "bad.toml").write_text("epochs = [\n")
    (base / "unknown.toml").write_text("learning_rate = 0.1\n")
    (base / "badvalue.toml").write_text("[augment]\nflip = 3\n")
    (base / "bad.md5").write_text("zzz\n")
    (base / "wrong.md5").write_text("".join(f"{'0' * 32}  cifar-10-batches-py/{p.name}\n" for p in good.iterdir()))
    (base / "a-file").write_text("not a folder")
    # One finished run, made once: every case must leave it exactly as it is.
    from fakes import FAKE_PLUGIN

    from cifarfw import runner
    from cifarfw.plugins import PluginHost

    host = PluginHost(load_entry_points=False)
    host.add(FAKE_PLUGIN, "fake")
    plugin, spec, config = runner.resolve(host, "fake", None, {}, {"epochs": 1, "runs_root": str(base / "runs")})
    runner.execute(host, plugin, spec, config)
    return base


def _cases():
    d = "--data-dir"
    return [
        # flags
        ("unknown-plugin", ["--plugin", "torhc-cnn"], 2, "unknown plugin"),
        ("unknown-model", ["--model", "resnet"], 2, "has no model 'resnet'"),
        ("unknown-recipe", ["--recipe", "fastest"], 2, "no recipe 'fastest'"),
        ("bad-optimizer", ["--optimizer", "adagrad"], 2, "no optimizer 'adagrad'"),
        ("zero-epochs", ["--epochs", "0"], 2, "epochs must be a positive integer"),
        ("negative-batch", ["--batch-size", "-8"], 2, "batch_size must be a positive integer"),
        ("negative-lr", ["--lr", "-1"], 2, "lr must be a positive number"),
        ("smoothing-one", ["--label-smoothing", "1"], 2, "label_smoothing must be a number in [0, 1)"),
        ("bad-device", ["--device", "npu"], 2, "device must be auto, cpu, cuda"),
        ("bad-model-option", ["--width", "tiny"], 2, "--width must be one of narrow, wide"),
        ("malformed-set", ["--set", "epochs"], 2, "--set expects KEY=VALUE"),
        ("set-unknown-key", ["--set", "epoch=3"], 2, "unknown key 'epoch'"),
        ("set-bad-type", ["--set", "augment.flip=7"], 2, "augment.flip must be true or false"),
        ("unknown-dataset", ["--dataset", "cifar100"], 2, "unknown dataset 'cifar100'"),
        ("unknown-reporter", ["--set", "reporters=['slack']"], 2, "unknown reporter 'slack'"),
        # config files
        ("config-missing", ["--config", "{base}/nope.toml"], 2, "does not exist"),
        ("config-not-toml", ["--config", "{base}/bad.toml"], 2, "is not valid TOML"),
        ("config-unknown-key", ["--config", "{base}/unknown.toml"], 2, "unknown key 'learning_rate'"),
        ("config-bad-value", ["--config", "{base}/badvalue.toml"], 2, "augment.flip must be true or false"),
        ("config-is-folder", ["--config", "{base}/empty"], 2, "cannot read config file"),
        # data files
        ("data-dir-missing", ["--dataset", "cifar10", d, "{base}/nowhere"], 3, "does not exist"),
        ("data-dir-empty", ["--dataset", "cifar10", d, "{base}/empty"], 3, "no CIFAR-10 in"),
        ("data-file-missing", ["--dataset", "cifar10", d, "{base}/missing"], 3, "lacks test_batch"),
        ("data-unofficial", ["--dataset", "cifar10", d, "{base}/good"], 3, "does not match the official CIFAR-10"),
        (
            "data-wrong-sums",
            ["--dataset", "cifar10", d, "{base}/good", "--data-checksums", "{base}/wrong.md5"],
            3,
            "does not match its sum",
        ),
        (
            "data-bad-sums-file",
            ["--dataset", "cifar10", d, "{base}/good", "--data-checksums", "{base}/bad.md5"],
            3,
            "is not an md5sum line",
        ),
        (
            "data-truncated",
            ["--dataset", "cifar10", d, "{base}/truncated", "--no-verify-data"],
            3,
            "data_batch_2 is truncated or corrupt",
        ),
        ("data-exploit", ["--dataset", "cifar10", d, "{base}/exploit", "--no-verify-data"], 3, "refusing to load"),
        (
            "data-not-a-batch",
            ["--dataset", "cifar10", d, "{base}/notdict", "--no-verify-data"],
            3,
            "data_batch_5 is not a CIFAR-10 batch",
        ),
        # run folders
        ("runs-root-is-file", ["--runs-root", "{base}/a-file"], 6, "cannot write to runs root"),
        ("resume-unknown", ["--resume", "no-such-run"], 6, "no run 'no-such-run'"),
        ("resume-finished", ["--resume", "last"], 2, "already finished"),
        ("resume-with-flags", ["--resume", "last", "--epochs", "9"], 2, "drop --epochs"),
        # plugins
        ("plugin-broken", ["--plugin", "broken"], 5, "failed to load"),
        ("plugin-blocked", ["--plugin", "blocked"], 5, "is blocked"),
    ]


CASES = _cases()


@pytest.mark.parametrize(("name", "args", "exit_code", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(cli, entry_points, monkeypatch, prepared, tmp_path, name, args, exit_code, message):
    entry_points(FAKE, BROKEN, ("blocked", "fakes:FAKE_PLUGIN"))
    monkeypatch.setenv("CIFARFW_DISABLE_PLUGINS", "blocked")
    runs = prepared / "runs"
    before, data_before = snapshot(runs), snapshot(prepared)
    args = [a.replace("{base}", str(prepared)) for a in args]
    base = ["run"] if "--plugin" in args or "--resume" in args else ["run", "--plugin", "fake"]
    if "--runs-root" not in args:
        base += ["--runs-root", str(runs)]
    code, _, err = cli(*base, *args)
    assert_one_line_error(code, err, message)
    assert code == exit_code
    assert snapshot(runs) == before, "a previous run was changed"
    assert snapshot(prepared) == data_before
    assert not (tmp_path / "PWNED").exists() and not (prepared / "PWNED").exists()


def test_matrix_is_large_enough():
    assert len(CASES) >= 25


def test_disk_full_while_writing_keeps_the_old_file(cli, entry_points, monkeypatch, tmp_path):
    """ENOSPC while writing run.json: exit 7, one line, and the last good run.json intact."""
    entry_points(FAKE)
    import os

    import cifarfw.runs as runs_mod

    real_fsync, calls = os.fsync, {"n": 0}

    def fsync_until_full(fd):
        calls["n"] += 1
        if calls["n"] > 6:  # the first records go through, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(runs_mod.os, "fsync", fsync_until_full)
    code, _, err = cli("run", "--plugin", "fake", "--epochs", "5", "--runs-root", str(tmp_path / "runs"))
    assert_one_line_error(code, err, "disk is full")
    assert code == 7
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    record = json.loads((run_dir / "run.json").read_text())  # still a complete, readable record
    assert record["status"] == "running" and record["epochs"]
    assert not [p for p in run_dir.rglob("*.tmp")], "a half-written temporary file was left"


def test_nan_exit_code(cli, entry_points, tmp_path):
    entry_points(FAKE)
    code, _, err = cli("run", "--plugin", "fake", "--lr", "1e307", "--runs-root", str(tmp_path / "runs"))
    assert_one_line_error(code, err, "loss became")
    assert code == 8
