"""Records you can trust (issue 16): damaged records never stop work, records survive moves,
locks know their owner, every refusal is one line with its documented exit code and writes
nothing, files honour the umask, and the CIFAR-10 download works against a real server."""

from __future__ import annotations

import errno
import hashlib
import http.server
import io
import json
import os
import pickle
import shutil
import signal
import socket
import stat
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from test_data import write_cifar

from cifarfw.errors import RunDirError
from cifarfw.runs import RunLock, lock_alive, read_record
from cifarfw.testing import assert_one_line_error
from cifarfw_cifar10 import cifar10

FAKE = ("fake", "fakes:FAKE_PLUGIN")
PLUGINS = (FAKE, ("tensorboard", "cifarfw_tensorboard.plugin"), ("compare", "cifarfw_compare.plugin"))
STOPPER_EP = ("stopper", "test_records_trust:STOPPER")


class Stopper:
    """Signals this process at the end of a chosen epoch (``times`` signals: 2 = stop at once)."""

    signum, at_epoch, times = 0, 0, 1

    from cifarfw import hookimpl

    @hookimpl
    def on_epoch_end(self, epoch):
        if epoch == self.at_epoch and self.signum:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


STOPPER = Stopper()


@pytest.fixture
def world(cli, entry_points, tmp_path):
    entry_points(*PLUGINS, STOPPER_EP)
    yield cli, tmp_path / "runs"
    STOPPER.signum, STOPPER.times = 0, 1


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def stopped_run(cli, runs: Path, *extra: str, at: int = 2) -> Path:
    """A 5-epoch fake run stopped by SIGTERM after epoch ``at`` (its checkpoint written)."""
    STOPPER.signum, STOPPER.at_epoch = signal.SIGTERM, at
    code, _, err = cli("run", "--plugin", "fake", "--epochs", "5", "--seed", "3", "--runs-root", str(runs), *extra)
    STOPPER.signum = 0
    assert code == 143, err
    return run_dirs(runs)[-1]


# --- 2. damaged records ---------------------------------------------------------------------

DAMAGE = {
    "list": lambda r: [],
    "null": lambda r: None,
    "config-str": lambda r: {**r, "config": "oops"},
    "final-str": lambda r: {**r, "final": {"test_acc": "high"}},
    "final-nan": lambda r: {**r, "final": {"test_acc": float("nan")}},
    "epochs-str": lambda r: {**r, "epochs": "many"},
    "epoch-entry": lambda r: {**r, "epochs": [{"epoch": "1", "test_acc": 0.5}]},
    "status-int": lambda r: {**r, "status": 5},
    "checkpoint-str": lambda r: {**r, "checkpoint": "x"},
    "resolved-list": lambda r: {**r, "resolved": []},
    "garbage": "garbage",
}


@pytest.fixture
def damaged_root(world):
    """A runs root with one good finished run and, per case, one damaged copy of it."""
    cli, runs = world

    def make(case: str) -> Path:
        code, _, err = cli("run", "--plugin", "fake", "--epochs", "2", "--runs-root", str(runs))
        assert code == 0, err
        (good,) = run_dirs(runs)
        bad = runs / "20990101-000000-softmax-s0-dead"
        shutil.copytree(good, bad)
        damage = DAMAGE[case]
        text = "not json {" if damage == "garbage" else json.dumps(damage(json.loads((bad / "run.json").read_text())))
        (bad / "run.json").write_text(text)
        return bad

    return cli, runs, make


def one_warning(err: str, bad: Path) -> None:
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(bad) in warnings[0], err
    assert "Traceback" not in err and "internal error" not in err


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_record_is_skipped_with_one_warning_everywhere(damaged_root, monkeypatch, case):
    cli, runs, make = damaged_root
    bad = make(case)
    before = snapshot(bad)
    code, out, err = cli("runs", "--runs-root", str(runs))
    assert code == 0 and "softmax" in out and bad.name not in out, err
    one_warning(err, bad)
    code, out, err = cli("compare", "--runs-root", str(runs), "--format", "json")
    assert code == 0 and len(json.loads(out)["columns"]) == 1, err
    one_warning(err, bad)
    monkeypatch.setattr("cifarfw_tensorboard.command.os.execv", lambda *a: None)
    code, _, err = cli("tensorboard", "--runs-root", str(runs))
    assert code == 0, err
    one_warning(err, bad)
    code, _, err = cli("run", "--plugin", "fake", "--epochs", "1", "--runs-root", str(runs))  # a new run there
    assert code == 0, err
    assert "Traceback" not in err and "internal error" not in err
    assert [read_record(p)["status"] for p in run_dirs(runs) if p != bad] == ["finished", "finished"]
    assert snapshot(bad) == before  # the damaged record is left as it is
    with pytest.raises(RunDirError, match=bad.name):
        read_record(bad)


@pytest.mark.parametrize("case", ["list", "checkpoint-str", "garbage"])
def test_resume_of_a_damaged_record_is_one_line_and_leaves_no_lock(damaged_root, case):
    cli, runs, make = damaged_root
    bad = make(case)
    before = snapshot(bad)
    code, _, err = cli("run", "--resume", bad.name, "--runs-root", str(runs))
    assert_one_line_error(code, err, bad.name, "damaged" if case != "list" else "not a cifarfw run record")
    assert code == RunDirError.exit_code
    assert not (bad / ".lock").exists() and snapshot(bad) == before


# --- 3. records survive moves -----------------------------------------------------------------


def test_checkpoint_paths_are_relative_and_a_moved_run_resumes(world, tmp_path):
    cli, runs = world
    run_dir = stopped_run(cli, runs)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["schema_version"] == 2
    assert record["checkpoint"] == {"epoch": 2, "path": "checkpoints/epoch2.npz"}
    assert record["previous_checkpoint"]["path"] == "checkpoints/epoch1.npz"
    moved = tmp_path / "elsewhere" / "runs"
    moved.mkdir(parents=True)
    shutil.move(run_dir, moved / run_dir.name)
    code, _, err = cli("run", "--resume", "last", "--runs-root", str(moved))
    assert code == 0, err
    record = read_record(moved / run_dir.name)
    assert record["status"] == "finished" and [e["epoch"] for e in record["epochs"]] == [1, 2, 3, 4, 5]
    assert record["checkpoint"]["path"] == "checkpoints/epoch5.npz"


def test_a_relative_runs_root_resumes_from_another_directory(world, tmp_path, monkeypatch):
    cli, _ = world
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    run_dir = stopped_run(cli, Path("relruns"))
    monkeypatch.chdir(tmp_path / "b")
    code, _, err = cli("run", "--resume", run_dir.name, "--runs-root", "../a/relruns")
    assert code == 0, err
    assert read_record(tmp_path / "a" / run_dir)["status"] == "finished"


@pytest.mark.parametrize("form", ["absolute", "cwd-relative"])
def test_schema_1_paths_are_upgraded_on_read(world, tmp_path, form):
    cli, runs = world
    run_dir = stopped_run(cli, runs)
    record = json.loads((run_dir / "run.json").read_text())
    old = Path("/old/place/runs") if form == "absolute" else Path("relruns")
    for key in ("checkpoint", "previous_checkpoint"):
        record[key]["path"] = str(old / run_dir.name / record[key]["path"])  # as schema 1 wrote it
    record["schema_version"] = 1
    (run_dir / "run.json").write_text(json.dumps(record))
    assert read_record(run_dir)["checkpoint"]["path"] == "checkpoints/epoch2.npz"
    code, _, err = cli("run", "--resume", "last", "--runs-root", str(runs))
    assert code == 0, err
    assert read_record(run_dir)["status"] == "finished"


# --- 4. locks that know their owner ------------------------------------------------------------


def test_the_lock_names_host_pid_and_start_time(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    owner = json.loads((tmp_path / ".lock").read_text())
    assert owner["host"] == socket.gethostname() and owner["pid"] == os.getpid()
    assert owner["start"] == Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    assert lock_alive(tmp_path)
    lock.release()


def test_a_reused_pid_is_not_the_owner(world):
    """`echo 1 > .lock`, resumed as PID 1 of a new container: the bare PID naming the resuming
    process itself, or a PID whose start time differs, is a stale lock."""
    cli, runs = world
    run_dir = stopped_run(cli, runs, at=1)
    (run_dir / ".lock").write_text(f"{os.getpid()}\n")
    code, _, err = cli("run", "--resume", "last", "--runs-root", str(runs))
    assert code == 0, err
    run_dir = stopped_run(cli, runs, at=1)
    (run_dir / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": "1"}))
    assert not lock_alive(run_dir)
    code, _, err = cli("run", "--resume", run_dir.name, "--runs-root", str(runs))
    assert code == 0, err


def test_another_hosts_lock_is_reported_and_only_force_unlock_takes_it(world):
    cli, runs = world
    run_dir = stopped_run(cli, runs, at=1)
    (run_dir / ".lock").write_text(json.dumps({"host": "node-17", "pid": 999999, "start": "5"}))
    assert lock_alive(run_dir)  # a gone PID here says nothing of node-17
    code, _, err = cli("run", "--resume", "last", "--runs-root", str(runs))
    assert_one_line_error(code, err, "in use by process 999999 on host node-17", "--force-unlock")
    assert code == 6 and read_record(run_dir)["status"] == "interrupted"
    code, _, err = cli("run", "--resume", "last", "--runs-root", str(runs), "--force-unlock")
    assert code == 0, err
    assert "taking over the lock of process 999999 (node-17)" in err
    assert read_record(run_dir)["status"] == "finished" and not (run_dir / ".lock").exists()
    code, _, err = cli("run", "--plugin", "fake", "--force-unlock", "--runs-root", str(runs))
    assert_one_line_error(code, err, "--force-unlock goes with --resume")
    assert code == 2


# --- 4-6. exit codes, one line, nothing written ----------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["mkdir", "lock", "config"])
def test_a_full_disk_at_run_start_exits_7_and_leaves_no_folder(world, monkeypatch, where):
    cli, runs = world
    runs.mkdir()
    if where == "mkdir":
        real = Path.mkdir
        monkeypatch.setattr(Path, "mkdir", lambda p, *a, **k: _enospc() if p.parent == runs else real(p, *a, **k))
    elif where == "lock":
        monkeypatch.setattr("cifarfw.runs.os.fdopen", _enospc)
    else:
        monkeypatch.setattr("cifarfw.runs.os.fsync", _enospc)
    code, _, err = cli("run", "--plugin", "fake", "--runs-root", str(runs))
    assert_one_line_error(code, err, "disk is full")
    assert code == 7
    assert run_dirs(runs) == []


REFUSED = [
    ("seed-huge", ["--seed", "99999999999999999999999"], 2, "seed"),
    ("lr-inf", ["--lr", "inf"], 2, "lr"),
    ("weight-decay-inf", ["--set", "weight_decay=inf"], 2, "weight_decay"),
    ("ds-seed-negative", ["--set", "dataset_options.seed=-1"], 2, "dataset_options.seed must be an integer"),
    ("ds-seed-text", ["--set", "dataset_options.seed=abc"], 2, "dataset_options.seed must be an integer"),
    ("ds-train-1e11", ["--set", "dataset_options.train_size=1e11"], 2, "dataset_options.train_size"),
    ("ds-train-huge", ["--set", "dataset_options.train_size=100000000000"], 2, "dataset_options.train_size"),
    ("ds-train-5", ["--set", "dataset_options.train_size=5"], 2, "dataset_options.train_size"),
    ("ds-unknown", ["--set", "dataset_options.colour=1"], 2, "unknown synthetic dataset option"),
    ("cifar10-options", ["--dataset", "cifar10", "--set", "dataset_options.seed=1"], 2, "takes no dataset_options"),
    ("cifar10-no-dir", ["--dataset", "cifar10", "--data-dir", "/no/such/dir"], 3, "does not exist"),
    ("seeds-huge", ["--seeds", "1000000000"], 2, "seeds"),
]


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize(("name", "args", "exit_code", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_before_any_folder_exists(world, name, args, exit_code, message, dry_run):
    """Every check the real run makes before training, --dry-run makes too."""
    cli, runs = world
    code, _, err = cli("run", "--plugin", "fake", "--runs-root", str(runs), *args, *(["--dry-run"] if dry_run else []))
    assert_one_line_error(code, err, message)
    assert code == exit_code
    assert not runs.exists()


def _cifar_case(folder: Path, case: str) -> None:
    if case == "empty-test-batch":
        batch = {"labels": [], "data": np.zeros((0, 3072), np.uint8)}
        (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    elif case == "label-names-int":
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": 5}, protocol=2))
    elif case == "labels-string":
        batch = pickle.loads((folder / "data_batch_1").read_bytes())
        batch["labels"] = "0123456789" * 2
        (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.parametrize("case", ["empty-test-batch", "label-names-int", "labels-string"])
def test_malformed_cifar_files_are_exit_3(world, tmp_path, case):
    cli, runs = world
    folder = write_cifar(tmp_path / "data" / "cifar-10-batches-py")
    _cifar_case(folder, case)
    before = snapshot(folder)
    args = ("--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--no-verify-data")
    code, _, err = cli("run", "--plugin", "fake", "--runs-root", str(runs), *args)
    assert_one_line_error(code, err, str(folder))
    assert code == 3 and not runs.exists() and snapshot(folder) == before


def test_html_compare_with_a_truncated_predictions_file_still_writes_the_report(world, tmp_path):
    cli, runs = world
    for seed in ("0", "1"):
        assert cli("run", "--plugin", "fake", "--epochs", "1", "--seed", seed, "--runs-root", str(runs))[0] == 0
    damaged = run_dirs(runs)[0] / "predictions.npz"
    damaged.write_bytes(damaged.read_bytes()[:300])
    out_file = tmp_path / "report.html"
    code, _, err = cli("compare", "--runs-root", str(runs), "--format", "html", "--output", str(out_file))
    assert code == 0, err
    assert out_file.stat().st_size > 0 and "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(damaged) in warnings[0]


# --- 5. smaller ones ------------------------------------------------------------------------------


def test_a_run_without_checkpoints_says_it_cannot_be_resumed_and_resume_refuses(world):
    cli, runs = world
    for times, exit_code in ((1, 143), (2, 130)):  # stop at the epoch's end; stop at once
        STOPPER.signum, STOPPER.at_epoch, STOPPER.times = (signal.SIGTERM if times == 1 else signal.SIGINT), 1, times
        code, _, err = cli(
            "run", "--plugin", "fake", "--epochs", "3", "--set", "checkpoint=false", "--runs-root", str(runs)
        )
        STOPPER.signum = 0
        line = assert_one_line_error(code, err, "cannot be resumed")
        assert code == exit_code and "--resume" not in line
        run_dir = run_dirs(runs)[-1]
        assert read_record(run_dir)["status"] == "interrupted"
        before = snapshot(run_dir)
        code, _, err = cli("run", "--resume", run_dir.name, "--runs-root", str(runs))
        assert_one_line_error(code, err, "wrote no checkpoints", "cannot be resumed")
        assert code == 2 and snapshot(run_dir) == before


def test_a_failed_fallback_resume_keeps_the_last_epochs_metrics(world):
    cli, runs = world
    run_dir = stopped_run(cli, runs, at=3)
    epochs = read_record(run_dir)["epochs"]
    for name in ("epoch3.npz", "epoch2.npz"):  # the latest and the one to fall back to
        (run_dir / "checkpoints" / name).write_bytes(b"garbage")
    code, _, err = cli("run", "--resume", "last", "--runs-root", str(runs))
    assert_one_line_error(code, err, "epoch2.npz cannot be read")
    assert code == 4
    assert read_record(run_dir)["epochs"] == epochs  # epoch 3's metrics too


def test_files_honour_the_umask_and_stay_atomic(world, tmp_path):
    cli, runs = world
    umask = os.umask(0o022)
    os.umask(umask)
    mode = 0o666 & ~umask  # 0o644 under the usual 022, not mkstemp's 0o600
    code, _, err = cli("run", "--plugin", "fake", "--epochs", "2", "--runs-root", str(runs))
    assert code == 0, err
    report = tmp_path / "report.md"
    assert cli("compare", "--runs-root", str(runs), "--output", str(report))[0] == 0
    (run_dir,) = run_dirs(runs)
    files = [run_dir / n for n in ("run.json", "config.toml", "predictions.npz", "checkpoints/epoch2.npz")]
    files += [next(runs.rglob("events.out.tfevents.*cifarfw-hparams*")), report]
    assert len(files) == 6
    assert {str(f): oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {str(f): oct(mode) for f in files}
    assert not list(runs.rglob("*.tmp"))


# --- 7. the lead's one-line promises, checked here --------------------------------------------


def test_sigint_during_seeds_prints_the_error_once(world):
    cli, runs = world
    STOPPER.signum, STOPPER.at_epoch = signal.SIGINT, 1
    code, _, err = cli("run", "--plugin", "fake", "--epochs", "2", "--seeds", "3", "--runs-root", str(runs))
    assert code == 130
    assert err.count("Error:") == 1, err
    assert len(run_dirs(runs)) == 1


# --- 6. the CIFAR-10 download, for real against a local server ------------------------------


def _archive(tmp_path: Path) -> bytes:
    folder = write_cifar(tmp_path / "src" / cifar10.FOLDER)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=cifar10.FOLDER)
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving ``state["body"]`` (``state["cut"]``: announce the
    full length, send only that many bytes); ``state["hits"]`` counts requests."""
    state = {"body": _archive(tmp_path), "cut": None, "hits": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state["hits"] += 1
            body = state["body"]
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: state["cut"]] if state["cut"] else body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(cifar10, "URL", f"http://127.0.0.1:{httpd.server_address[1]}/cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(state["body"]).hexdigest())
    yield state
    httpd.shutdown()
    httpd.server_close()


DOWNLOAD = ("--plugin", "fake", "--dataset", "cifar10", "--no-verify-data", "--epochs", "1")


def test_download_success_then_the_cache_without_the_server(world, server, tmp_path):
    cli, runs = world
    code, _, err = cli("run", *DOWNLOAD, "--runs-root", str(runs))
    assert code == 0, err
    assert server["hits"] == 1
    cache = tmp_path / "cache"
    assert (cache / cifar10.FOLDER / "data_batch_1").is_file()
    code, _, err = cli("run", *DOWNLOAD, "--runs-root", str(runs))
    assert code == 0, err
    assert server["hits"] == 1  # the second run used the cache
    assert [read_record(p)["dataset"]["source"] for p in run_dirs(runs)] == [str(cache / cifar10.FOLDER)] * 2


@pytest.mark.parametrize("fault", ["md5", "truncated"])
def test_a_bad_download_is_exit_3_and_leaves_nothing_half_written(world, server, tmp_path, monkeypatch, fault):
    cli, runs = world
    if fault == "md5":
        monkeypatch.setattr(cifar10, "ARCHIVE_MD5", "0" * 32)
    else:
        server["cut"] = len(server["body"]) // 2
    code, _, err = cli("run", *DOWNLOAD, "--runs-root", str(runs))
    assert_one_line_error(code, err, "failed its MD5 check" if fault == "md5" else "download was cut short")
    assert code == 3 and not runs.exists()
    cache = tmp_path / "cache"
    left = sorted(p.name for p in cache.rglob("*")) if cache.exists() else []
    assert left == [], left
    server["cut"] = None  # the next try, with a good transfer, works
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(server["body"]).hexdigest())
    code, _, err = cli("run", *DOWNLOAD, "--runs-root", str(runs))
    assert code == 0, err
