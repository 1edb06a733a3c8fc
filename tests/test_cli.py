"""The CLI: bad input gives one line, a non-zero exit and no traceback; nothing is written."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest
from test_data import Exploit, write_cifar

from cifarfw.testing import assert_one_line_error

FAKE = ("fake", "fakes:FAKE_PLUGIN")


@pytest.fixture
def fake_cli(cli, entry_points):
    entry_points(FAKE)
    return cli


def run_args(tmp_path, *extra):
    return ("run", "--plugin", "fake", "--runs-root", str(tmp_path / "runs"), *extra)


def test_run_and_runs_listing(fake_cli, tmp_path):
    code, out, err = fake_cli(*run_args(tmp_path, "--epochs", "2", "--name", "first"))
    assert code == 0, err
    assert "epoch 2/2" in out and "finished: test acc" in out
    code, out, _ = fake_cli("runs", "--runs-root", str(tmp_path / "runs"), "--json")
    (row,) = json.loads(out)
    assert row["status"] == "finished" and row["epochs"] == "2/2" and row["model"] == "softmax"
    assert "first" in row["id"]
    code, out, _ = fake_cli("runs", "--runs-root", str(tmp_path / "runs"))
    assert "finished" in out and "softmax" in out and "%" in out


def test_dry_run_prints_resolved_config_and_writes_nothing(fake_cli, tmp_path):
    code, out, _ = fake_cli(
        *run_args(tmp_path, "--dry-run", "--lr", "0.2", "--set", "augment.flip=false", "--width", "wide")
    )
    assert code == 0
    assert "lr = 0.2" in out and "epochs = 3" in out and "flip = false" in out and 'width = "wide"' in out
    assert not (tmp_path / "runs").exists()


def test_config_file_and_flags(fake_cli, tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("epochs = 5\nlr = 0.3\n[augment]\nflip = false\n")
    code, out, _ = fake_cli(*run_args(tmp_path, "--config", str(cfg), "--epochs", "1", "--dry-run"))
    assert code == 0 and "epochs = 1" in out and "lr = 0.3" in out and "flip = false" in out


def test_models_lists_recipes_and_options(fake_cli):
    code, out, _ = fake_cli("models")
    assert code == 0
    assert "fake (1 model):\n  softmax (numpy, 32x32): " in out  # grouped by plugin
    assert "recipes: quick" in out and "--width [narrow|wide]" in out
    code, out, _ = fake_cli("models", "--plugin", "fake", "--filter", "soft*", "--json")
    assert code == 0 and [(r["plugin"], r["model"]) for r in json.loads(out)] == [("fake", "softmax")]
    code, out, _ = fake_cli("models", "--filter", "resnet*")
    assert code == 0 and "no models match" in out
    code, _, err = fake_cli("models", "--plugin", "fak")
    assert_one_line_error(code, err, "unknown plugin 'fak'", "did you mean 'fake'")


def test_models_lists_a_zoo_by_name_and_in_full_when_narrowed(cli, entry_points, tmp_path):
    entry_points(FAKE, ("zoo", "plugins_fixture.zoo"))
    code, out, _ = cli("models", "--plugin", "zoo", "--json")
    assert code == 0 and [r["model"] for r in json.loads(out)] == ["zoo/tiny", "zoo/wide"]
    code, out, _ = cli("models", "--plugin", "zoo", "--filter", "t*")
    assert code == 0 and "zoo/tiny (numpy, 32x32): tiny softmax" in out and "recipes: zoo" in out
    code, out, _ = cli(
        "run", "--plugin", "zoo", "--model", "tiny", "--dataset", "synthetic", "--runs-root", str(tmp_path)
    )
    assert code == 0 and "finished" in out
    code, _, err = cli("run", "--plugin", "zoo", "--dataset", "synthetic")
    assert_one_line_error(code, err, "offers a zoo of models; name one with --model")


def test_unknown_command_suggests(fake_cli):
    code, _, err = fake_cli("rnu")
    assert_one_line_error(code, err, "no command 'rnu'", "did you mean 'run'")


BAD_RUNS = [
    (("--plugin", "fkae"), "unknown plugin 'fkae'", 2),
    (("--optimizer", "adagrad"), "the numpy trainer has no optimizer 'adagrad'", 2),
    (("--precision", "fp8"), "Invalid value for '--precision'", 2),
    (("--width", "huge"), "--width must be one of narrow, wide", 2),
    (("--epochs", "0"), "epochs must be a positive integer, got 0", 2),
    (("--epochs", "-3"), "epochs must be a positive integer, got -3", 2),
    (("--epochs", "many"), "Invalid value for '--epochs'", 2),
    (("--batch-size", "0"), "batch_size must be a positive integer", 2),
    (("--lr", "-0.01"), "lr must be a positive number", 2),
    (("--lr", "0"), "lr must be a positive number", 2),
    (("--set", "lr"), "--set expects KEY=VALUE", 2),
    (("--set", "nonsense=1"), "unknown key 'nonsense'", 2),
    (("--device", "tpu:0"), "device must be auto, cpu, cuda", 2),
    (("--recipe", "slow"), "no recipe 'slow'", 2),
    (("--dataset", "mnist"), "unknown dataset 'mnist'", 2),
    (("--bogus-flag",), "No such option '--bogus-flag'", 2),
]


@pytest.mark.parametrize(("args", "message", "exit_code"), BAD_RUNS, ids=[" ".join(a) for a, _, _ in BAD_RUNS])
def test_bad_run_flags(fake_cli, tmp_path, args, message, exit_code):
    base = ["run", "--runs-root", str(tmp_path / "runs")]
    if "--plugin" not in args:
        base += ["--plugin", "fake"]
    code, _, err = fake_cli(*base, *args)
    assert_one_line_error(code, err, message)
    assert code == exit_code
    assert not (tmp_path / "runs").exists()


def test_unreadable_config_file(fake_cli, tmp_path):
    missing = tmp_path / "missing.toml"
    code, _, err = fake_cli(*run_args(tmp_path, "--config", str(missing)))
    assert_one_line_error(code, err, "config file", "does not exist")
    folder = tmp_path / "a-folder.toml"
    folder.mkdir()
    code, _, err = fake_cli(*run_args(tmp_path, "--config", str(folder)))
    assert_one_line_error(code, err, "cannot read config file")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = fake_cli(*run_args(tmp_path, "--config", str(binary)))
    assert_one_line_error(code, err, "config file")
    assert not (tmp_path / "runs").exists()


def test_missing_data_folder(fake_cli, tmp_path):
    code, _, err = fake_cli(*run_args(tmp_path, "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere")))
    assert_one_line_error(code, err, "nowhere does not exist", "--data-dir")
    assert code == 3
    assert not (tmp_path / "runs").exists()


def test_truncated_batch_file(fake_cli, tmp_path):
    folder = write_cifar(tmp_path / "data" / "cifar-10-batches-py")
    path = folder / "data_batch_4"
    path.write_bytes(path.read_bytes()[:3000])
    code, _, err = fake_cli(
        *run_args(tmp_path, "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--no-verify-data")
    )
    assert_one_line_error(code, err, "data_batch_4 is truncated or corrupt")
    assert code == 3 and "without checking its checksums" not in err  # failed before the warning
    assert not (tmp_path / "runs").exists()


def test_pickle_that_runs_code(fake_cli, tmp_path):
    folder = write_cifar(tmp_path / "data" / "cifar-10-batches-py")
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Exploit()}, protocol=2))
    code, _, err = fake_cli(
        *run_args(tmp_path, "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--no-verify-data")
    )
    assert_one_line_error(code, err, "test_batch is not a CIFAR-10 batch", "refusing to load")
    assert not (tmp_path / "PWNED").exists()


def test_unverified_local_copy_warns_and_runs(fake_cli, tmp_path):
    write_cifar(tmp_path / "data" / "cifar-10-batches-py", per_file=40)
    code, _out, err = fake_cli(
        *run_args(
            tmp_path, "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--no-verify-data", "--epochs", "1"
        )
    )
    assert code == 0, err
    assert "warning: using cifar10" in err and "without checking its checksums" in err


def test_unwritable_runs_root(fake_cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    code, _, err = fake_cli("run", "--plugin", "fake", "--runs-root", str(blocker / "runs"))
    assert_one_line_error(code, err, "cannot write to runs root", "--runs-root")
    assert code == 6
    assert blocker.read_text() == "keep me"


def test_several_plugins_one_failing_others_run(fake_cli, tmp_path):
    code, out, err = fake_cli(
        "run", "--plugin", "nope", "--plugin", "fake", "--runs-root", str(tmp_path / "runs"), "--epochs", "1"
    )
    assert code == 2
    assert "finished" in out  # fake still ran
    assert "unknown plugin 'nope'" in err and "Traceback" not in err
    assert len([p for p in (tmp_path / "runs").iterdir() if p.is_dir()]) == 1


def test_startup_imports_no_framework():
    """`cifarfw --help` and `cifarfw plugins` stay off torch, tensorflow, tensorboard and matplotlib."""
    code = (
        "import sys\n"
        "from cifarfw.cli import main\n"
        "for args in (['--help'], ['plugins'], ['run', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'tensorflow', 'keras', 'tensorboard', 'matplotlib') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "HEAVY []" in out, out[-2000:]
