"""keras-cnn under MultiWorkerMirroredStrategy: two real `cifarfw run` worker processes, each with
its TF_CONFIG on loopback ports (CPU, synthetic data, global batch 64 = 32 per worker).

One 3-epoch launch serves every check: worker 1 is SIGKILLed in epoch 2, so the chief must
fail with a one-line error instead of hanging; `--resume` on both workers continues at epoch 2,
where worker 1 gets a SIGTERM, so both must stop after the chief's epoch-2 checkpoint. Both
workers' weights (dumped at every epoch end by a test plugin) must be identical, equal to a
single-process run's with the same global batch within float32 rounding, and exactly one run
folder (the chief's) must record world size 2 and the backend.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cifarfw.errors import UsageError
from cifarfw.plugins import PluginHost

pytest.importorskip("cifarfw_keras._tf")  # TensorFlow, imported the quiet way

from cifarfw_keras import distributed, runtime
from cifarfw_keras._tf import tf

TESTS = Path(__file__).parent
PLUGINS = {  # entry-point name -> module file, installed for the launches through a dist-info
    "test-weights": TESTS / "weights_dump" / "cifarfw_test_weights.py",
    "test-killer": TESTS.parents[2] / "tests" / "killer" / "cifarfw_test_killer.py",
}
ARGS = [
    "--plugin", "keras-cnn", "--dataset", "synthetic",
    "--set", "dataset_options.train_size=256", "--set", "dataset_options.test_size=64",
    "--epochs", "3", "--batch-size", "64", "--seed", "1", "--precision", "fp32",
    "--set", "prediction_samples=0",
]  # fmt: skip
BACKEND = "tf.distribute.MultiWorkerMirroredStrategy/ring"
DIST_TIMEOUT_S = 30  # CIFARFW_DIST_TIMEOUT in the launch: a collective waiting on a dead peer fails after this
KILL_TO_EXIT_LIMIT_S = DIST_TIMEOUT_S + 60  # TensorFlow's heartbeat check usually fails it sooner (~25 s)
COMMAND_TIMEOUT_S = 300  # one command, TensorFlow start-up included, on a loaded 2-core machine
# Weights after each epoch, distributed vs one process: the same batches and updates, only the
# float32 summation order differs (two 32-image gradient sums all-reduced vs one 64-image sum),
# measured at ~2e-7 after 4 Adam steps of lr 1e-3. 1e-5 leaves 50x room yet is 100x below one
# Adam step (~lr), so a skipped, repeated or mis-sharded batch fails it.
WEIGHTS_ATOL = 1e-5
METRICS_ATOL = 1e-5  # losses and accuracies of the same computation (accuracies: counts of 256 or 64)


# --- in one process: sharding rules and launch checks ---------------------------------------------


def slices(n: int, workers: int, replicas: int) -> list[tuple[list[int], float]]:
    """Every replica's rows of one global batch of ``n`` rows, in replica order."""
    x = tf.reshape(tf.range(n), [n, 1])
    batches = tf.data.Dataset.from_tensors((x, x))
    out = []
    for worker in range(workers):
        for rows, _, size in distributed.replica_slices(batches, worker, workers, replicas):
            out.append((rows.numpy()[:, 0].tolist(), float(size)))
    return out


@pytest.mark.parametrize(("workers", "replicas"), [(1, 1), (2, 2), (1, 2), (2, 4), (3, 3)])
def test_replicas_take_contiguous_near_equal_slices_of_every_global_batch(workers, replicas):
    for n in (64, 63, 7, 1):
        parts = slices(n, workers, replicas)
        assert len(parts) == replicas
        assert [row for rows, _ in parts for row in rows] == list(range(n))  # every row once, in order
        sizes = [len(rows) for rows, _ in parts]
        assert max(sizes) - min(sizes) <= 1
        assert all(size == n for _, size in parts)  # each replica divides its loss sum by the global batch


def test_the_global_batch_must_divide_among_the_replicas():
    placement = distributed.Placement(strategy=None, backend="test", replicas=4)
    distributed.check_batch(64, placement)
    with pytest.raises(UsageError, match="global batch and must divide evenly among the 4 replicas"):
        distributed.check_batch(66, placement)


@pytest.mark.parametrize(
    ("env", "batch_size", "message"),
    [
        ({"WORLD_SIZE": "2", "RANK": "0"}, 64, "reads TF_CONFIG"),
        ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"index": 1}})}, 63, "multiple of 2"),
    ],
)
def test_a_launch_the_trainer_cannot_run_is_refused_before_the_run(monkeypatch, env, batch_size, message):
    from cifarfw.config import RunConfig

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=message):
        runtime.validate_launch(RunConfig(batch_size=batch_size))
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    runtime.validate_launch(RunConfig(batch_size=batch_size))  # one process: any batch


def test_collective_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(distributed.COLLECTIVE_TIMEOUT_ENV, "45")
    assert distributed.collective_timeout() == 45.0
    monkeypatch.delenv(distributed.COLLECTIVE_TIMEOUT_ENV)
    assert distributed.collective_timeout() == distributed.DEFAULT_COLLECTIVE_TIMEOUT_S
    for bad in ("soon", "0"):
        monkeypatch.setenv(distributed.COLLECTIVE_TIMEOUT_ENV, bad)
        with pytest.raises(UsageError, match="number of seconds"):
            distributed.collective_timeout()


def test_tensorflow_error_causes_fit_on_one_line():
    message = (
        "Graph execution error:\n\nDetected at node CollectiveReduceV2_1 defined at (most recent call last):\n"
        '  File "<frozen runpy>", line 198, in _run_module_as_main\n\n'
        "Collective ops is aborted by: task 1 is down\n/job:worker/replica:0/task:1\n"
        "\t [[{{node CollectiveReduceV2_1}}]] [Op:__inference_run_steps_12]"
    )
    assert (
        distributed.error_cause(message) == "Collective ops is aborted by: task 1 is down /job:worker/replica:0/task:1"
    )


# --- real launches: two workers with TF_CONFIG on loopback ---------------------------------------


def keras_cnn_installed() -> bool:
    host = PluginHost()
    host.collect()
    info = host.plugins.get("keras-cnn")
    return info is not None and info.status == "ok"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """A site folder holding the test plugins, each with a dist-info declaring its entry point."""
    site = tmp_path_factory.mktemp("keras-dist-site")
    for name, source in PLUGINS.items():
        shutil.copy(source, site / source.name)
        dist = source.stem.replace("_", "-")
        info = site / f"{source.stem}-0.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0\n")
        (info / "entry_points.txt").write_text(f"[cifarfw]\n{name} = {source.stem}\n")
    return site


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start(runs_root: Path, args: list[str], site: Path, weights: Path, tf_config: dict | None, **env: str):
    full_env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "CIFARFW_TEST_WEIGHTS_DIR": str(weights), **env}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")]))
    for name in ("TF_CONFIG", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        full_env.pop(name, None)
    if tf_config is not None:
        full_env["TF_CONFIG"] = json.dumps(tf_config)
    weights.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "cifarfw", "run", *args, "--runs-root", str(runs_root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
    )  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = COMMAND_TIMEOUT_S) -> tuple[int, str]:
    """(exit code, stderr); a process still running after ``timeout`` is killed and fails the test."""
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"process did not exit within {timeout:.0f} s (hung?):\n{stderr[-2000:]}")
    return process.returncode, stderr


def wait_for(condition, timeout: float = COMMAND_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (OSError, ValueError):  # a file not there yet, or being replaced
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout:.0f} s")
        time.sleep(0.2)


def cluster(ports: list[int], index: int) -> dict:
    return {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}


@pytest.fixture(scope="module")
def launch(tmp_path_factory, plugin_site) -> dict:
    """Two workers, worker 1 SIGKILLed in epoch 2; both resumed, worker 1 SIGTERMed in epoch 2;
    a single-process reference run."""
    if not keras_cnn_installed():
        pytest.skip("keras-cnn is not installed")
    root = tmp_path_factory.mktemp("keras-dist")
    runs, weights = root / "runs", root / "weights"
    timeout_env = {distributed.COLLECTIVE_TIMEOUT_ENV: str(DIST_TIMEOUT_S)}
    ports = free_ports(2)
    chief = start(runs, ARGS, plugin_site, weights, cluster(ports, 0), **timeout_env)
    worker = start(
        runs, ARGS, plugin_site, weights, cluster(ports, 1), CIFARFW_TEST_KILL="epoch_progress:2", **timeout_env
    )
    killed_rc, killed_err = finish(worker)
    # The reference trains while the chief notices that its peer died (it only waits meanwhile)
    # and while the workers resume: fewer idle seconds on a small machine.
    single = start(root / "single-runs", ARGS, plugin_site, root / "single-weights", None)
    chief_rc, chief_err = finish(chief, timeout=KILL_TO_EXIT_LIMIT_S)
    ports = free_ports(2)
    resumed = [start(runs, ["--resume", "last"], plugin_site, weights, cluster(ports, 0))]
    # Worker 1 starts once the chief has rewritten run.json for the resumed run, so it must find
    # the checkpoint in the rewritten record (the chief then waits for it at the strategy's start).
    wait_for(lambda: len(json.loads((only_run(runs) / "run.json").read_text()).get("resumed", [])) == 1)
    resumed.append(
        start(runs, ["--resume", "last"], plugin_site, weights, cluster(ports, 1), CIFARFW_TEST_SIGTERM_EPOCH="2")
    )
    single_rc, single_err = finish(single)
    assert single_rc == 0, single_err[-2000:]
    resume_results = [finish(p) for p in resumed]
    return {
        "runs": runs,
        "weights": weights,
        "single_runs": root / "single-runs",
        "single_weights": root / "single-weights",
        "killed": (killed_rc, killed_err),
        "chief": (chief_rc, chief_err),
        "resumed": resume_results,
    }


def load_weights(folder: Path, rank: int, epoch: int) -> dict[str, np.ndarray]:
    with np.load(folder / f"rank{rank}-epoch{epoch}.npz") as saved:
        return dict(saved)


def only_run(runs_root: Path) -> Path:
    folders = [p for p in runs_root.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


@pytest.mark.slow
def test_a_killed_worker_fails_the_chief_with_a_one_line_error_and_resume_continues(launch):
    killed_rc, _ = launch["killed"]
    assert killed_rc == -9  # the killer plugin SIGKILLed worker 1 in epoch 2
    chief_rc, chief_err = launch["chief"]  # exited within KILL_TO_EXIT_LIMIT_S of the kill
    run_id = only_run(launch["runs"]).name
    last = chief_err.strip().splitlines()[-1]
    assert chief_rc == 1, chief_err[-2000:]
    assert last.startswith("Error: a worker of this distributed run died or stopped answering"), last
    assert f"cifarfw run --resume {run_id}" in last
    assert "Traceback" not in chief_err
    record = json.loads((only_run(launch["runs"]) / "run.json").read_text())
    assert len(record["resumed"]) == 1 and [e["epoch"] for e in record["epochs"]] == [1, 2]


@pytest.mark.slow
def test_a_signal_to_one_worker_stops_both_after_the_chiefs_checkpoint(launch):
    (chief_rc, chief_err), (worker_rc, worker_err) = launch["resumed"]
    run_dir = only_run(launch["runs"])
    assert chief_rc == 128 + 15, chief_err[-2000:]  # SIGTERM reached worker 1 only
    assert worker_rc == 128 + 15, worker_err[-2000:]
    assert (
        chief_err.strip()
        .splitlines()[-1]
        .startswith(  # the hint adds --runs-root: not the default root
            f"Error: SIGTERM: run {run_dir.name} stopped after its last checkpoint; "
            f"continue with `cifarfw run --resume {run_dir.name}"
        )
    )
    assert worker_err.strip().splitlines()[-1].startswith("Error: SIGTERM: this worker stopped with the chief")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted" and record["checkpoint"]["epoch"] == 2  # not epoch 3


@pytest.mark.slow
def test_one_run_folder_records_world_size_and_backend(launch):
    run_dir = only_run(launch["runs"])  # the chief's; worker 1 wrote only to a scratch folder
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["world_size"] == 2
    assert record["config"]["backend"] == BACKEND
    assert record["resolved"]["replicas"] == 2
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert record["checkpoint"]["epoch"] == 2
    assert "world_size" in (run_dir / "config.toml").read_text()


@pytest.mark.slow
def test_both_workers_hold_identical_weights_after_every_epoch(launch):
    for epoch in (1, 2):  # epoch 1 from the killed launch, epoch 2 from the resumed one
        chief, worker = load_weights(launch["weights"], 0, epoch), load_weights(launch["weights"], 1, epoch)
        assert chief.keys() == worker.keys() and chief
        for name, value in chief.items():
            assert np.array_equal(value, worker[name]), (epoch, name)


@pytest.mark.slow
def test_the_chiefs_checkpoint_holds_the_trained_weights(launch):
    from cifarfw_keras._tf import keras

    run_dir = only_run(launch["runs"])
    record = json.loads((run_dir / "run.json").read_text())
    path = run_dir / record["checkpoint"]["path"]  # relative to the run folder (an absolute one stays whole)
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    live = load_weights(launch["weights"], 0, 2)
    assert {w.path: w.numpy() for w in model.weights}.keys() == live.keys()
    for w in model.weights:
        assert np.array_equal(w.numpy(), live[w.path]), w.path


@pytest.mark.slow
def test_two_workers_match_one_process_with_the_same_global_batch(launch):
    for epoch in (1, 2):
        # In model.weights order: a model loaded from a checkpoint (the resumed epoch 2) has other paths.
        single = list(load_weights(launch["single_weights"], 0, epoch).values())
        dist = list(load_weights(launch["weights"], 0, epoch).values())
        assert [w.shape for w in single] == [w.shape for w in dist] and single
        for i, (want, have) in enumerate(zip(single, dist, strict=True)):
            np.testing.assert_allclose(have, want, rtol=0, atol=WEIGHTS_ATOL, err_msg=f"epoch {epoch}, weight {i}")
    want = json.loads((only_run(launch["single_runs"]) / "run.json").read_text())["epochs"]
    have = json.loads((only_run(launch["runs"]) / "run.json").read_text())["epochs"]
    assert [e["epoch"] for e in have] == [1, 2]
    for w, h in zip(want, have, strict=False):  # the reference trained a 3rd epoch
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
            assert h[key] == pytest.approx(w[key], abs=METRICS_ATOL), (w["epoch"], key)
