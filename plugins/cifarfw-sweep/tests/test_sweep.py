"""cifarfw sweep on the fake numpy plugin (tests/fakes.py): grids in parallel, the records and
the comparison, Optuna with median pruning on SQLite, a sweep SIGKILLed then resumed, and the
bad-input matrix (one line, documented exit code, nothing written)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import SMALL, cifarfw

from cifarfw.runs import iter_runs
from cifarfw.testing import assert_one_line_error, run_cli


def sweep_records(root: Path, name: str) -> list[dict]:
    return [rec for _, rec in iter_runs(root, warn=None) if (rec.get("sweep") or {}).get("name") == name]


def test_grid_in_parallel_records_runs_and_compare(tmp_path, env):
    root = tmp_path / "runs"
    args = ["--plugin", "fake", "--grid", "lr=0.2,0.0001", "--seeds", "2", "--parallel", "2", "--epochs", "1"]
    done = cifarfw(env, "sweep", *args, *SMALL, "--runs-root", str(root), "--name", "g")
    assert done.returncode == 0, done.stdout + done.stderr
    records = sweep_records(root, "g")
    assert sorted(r["sweep"]["index"] for r in records) == [0, 1, 2, 3]
    assert all(r["status"] == "finished" for r in records)
    assert {json.dumps(r["sweep"]["params"], sort_keys=True) for r in records} == {
        json.dumps({"plugin": "fake", "lr": lr}, sort_keys=True) for lr in (0.2, 0.0001)
    }
    assert all(r["executor"] == {"name": "local", "node_id": r["host"]} for r in records)
    assert sorted((r["sweep"]["params"]["lr"], r["seed"]) for r in records) == [
        (0.0001, 0),
        (0.0001, 1),
        (0.2, 0),
        (0.2, 1),
    ]
    manifest = json.loads((root / "sweeps" / "g" / "manifest.json").read_text())
    assert {e["status"] for e in manifest["runs"].values()} == {"finished"}

    code, out, _ = run_cli("runs", "--runs-root", str(root), "--sweep", "g", "--json")
    assert code == 0 and len(json.loads(out)) == 4
    code, out, _ = run_cli("runs", "--runs-root", str(root), "--sweep", "other", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, err = run_cli("compare", "--runs-root", str(root), "--sweep", "g", "--format", "json")
    assert code == 0, err
    columns = json.loads(out)["columns"]
    assert [c["params"]["lr"] for c in columns] == [0.2, 0.0001]  # sorted by test accuracy, best first
    assert [c["best"] for c in columns] == [True, False]
    assert all(c["stats"]["test_acc"]["n"] == 2 for c in columns)
    code, out, _ = run_cli("compare", "--runs-root", str(root), "--sweep", "g")
    assert code == 0 and "lr=0.2 ★ best" in out


def test_dry_run_lists_every_run_and_writes_nothing(tmp_path, env, fake_site, monkeypatch):
    monkeypatch.syspath_prepend(str(fake_site))
    monkeypatch.setenv("CIFARFW_FAKES_DIR", env["CIFARFW_FAKES_DIR"])
    root = tmp_path / "runs"
    file = tmp_path / "sweep.toml"
    file.write_text(
        'plugin = "fake"\nseeds = 2\nepochs = 1\n[grid]\nlr = [0.1, 0.01]\n"model_options.width" = "narrow,wide"\n'
    )
    code, out, err = run_cli("sweep", "--sweep-file", str(file), "--runs-root", str(root), "--dry-run", "--name", "d")
    assert code == 0, err
    assert out.count("# sweep d, run ") == 8
    assert "run 7: plugin=fake, lr=0.01, model_options.width=wide, seed 1" in out
    assert not root.exists()


def test_optuna_median_pruning_on_sqlite(tmp_path, env):
    import optuna

    root = tmp_path / "runs"
    # Random sampler, seed 0, over two rates: 0.2, 0.0001, 0.2, 0.2, 0.0001. Once two trials
    # finished, a trial at 0.0001 is below the median after its first epoch: pruned.
    args = ["--plugin", "fake", "--search", "optuna", "--trials", "5", "--grid", "lr=0.0001,0.2", "--sampler", "random"]
    args += ["--prune", "median", "--seed", "0", "--epochs", "2", "--parallel", "2", "--name", "s"]
    done = cifarfw(env, "sweep", *args, *SMALL, "--runs-root", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    records = sweep_records(root, "s")
    assert len(records) == 5
    pruned = [r for r in records if r["status"] == "pruned"]
    assert pruned and all(len(r["epochs"]) == 1 and r["checkpoint"]["epoch"] == 1 for r in pruned)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{root / 'sweeps' / 'optuna.db'}")
    states = {t.number: t.state.name for t in study.trials}
    assert len(states) == 5 and set(states.values()) <= {"COMPLETE", "PRUNED"}
    assert {r["sweep"]["index"]: r["status"] for r in records} == {
        n: {"COMPLETE": "finished", "PRUNED": "pruned"}[s] for n, s in states.items()
    }
    assert all(t.intermediate_values for t in study.trials)  # every epoch reported


def test_sigkill_then_resume_loses_nothing_and_runs_nothing_twice(tmp_path, env):
    root = tmp_path / "runs"
    args = ["--plugin", "fake", "--grid", "lr=0.2,0.1", "--seeds", "2", "--parallel", "2", "--epochs", "3"]
    slow = {**env, "CIFARFW_FAKE_EPOCH_S": "1"}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "cifarfw", "sweep", *args, *SMALL, "--runs-root", str(root), "--name", "k"],
        env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:  # kill it with one run finished and others training
            records = sweep_records(root, "k")
            finished = any(r["status"] == "finished" for r in records)
            if finished and any(r["status"] == "running" and len(r["epochs"]) <= 1 for r in records):
                break
            assert sweep.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.1)
    finally:
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
    before = {r["id"]: r for r in sweep_records(root, "k")}
    finished_before = {i for i, r in before.items() if r["status"] == "finished"}

    done = cifarfw(slow, "sweep", "--resume", "k", "--runs-root", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    after = sweep_records(root, "k")
    assert sorted(r["sweep"]["index"] for r in after) == [0, 1, 2, 3]  # each combination once
    assert all(r["status"] == "finished" for r in after)
    assert len([p for p in root.iterdir() if (p / "run.json").is_file()]) == 4
    for run_id in finished_before:  # kept as they were, not run again
        assert next(r for r in after if r["id"] == run_id)["ended_at"] == before[run_id]["ended_at"]
    statuses = {r["id"]: r["status"] for r in before.values()}
    assert any(r.get("resumed") for r in after), (statuses, done.stdout)  # the interrupted ones continued
    again = cifarfw(slow, "sweep", "--resume", "k", "--runs-root", str(root))
    assert again.returncode == 0 and "4 runs (4 already done)" in again.stdout


BAD = [
    (["--grid", "lrr=0.1,0.2"], 2, "unknown key 'lrr'"),
    (["--grid", "lr=0.1,,0.2"], 2, "empty value"),
    (["--grid", "lr="], 2, "empty value"),
    (["--grid", "model_options.depth=1,2"], 2, "has no option 'depth'"),
    (["--search", "optuna", "--range", "lr=0.1:0.01"], 2, "LOW must be below HIGH"),
    (["--search", "optuna", "--range", "lr=0:0.1:log"], 2, "positive bounds"),
    (["--parallel", "0", "--grid", "lr=0.1,0.2"], 2, "--parallel must be a positive integer"),
    (["--search", "optuna", "--trials", "0", "--range", "lr=0.01:0.1"], 2, "--trials must be a positive integer"),
    (["--range", "lr=0.01:0.1"], 2, "--range needs --search optuna"),
    (["--executor", "slurmm"], 2, "unknown executor"),
    (["--search", "optuna", "--range", "lr=0.01:0.1", "--storage", "sqlite:////no/such/dir/x.db"], 2, "cannot open the Optuna storage"),
    (["--search", "optuna", "--range", "lr=0.01:0.1", "--storage", "nosuchdb://h/x"], 2, "cannot open the Optuna storage"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "code", "fragment"), BAD, ids=[b[2] for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, env, fake_site, monkeypatch, args, code, fragment):
    monkeypatch.syspath_prepend(str(fake_site))
    monkeypatch.setenv("CIFARFW_FAKES_DIR", env["CIFARFW_FAKES_DIR"])
    root = tmp_path / "runs"
    got, _, err = run_cli("sweep", "--plugin", "fake", *args, *SMALL, "--runs-root", str(root))
    assert_one_line_error(got, err, fragment)
    assert got == code
    assert not root.exists()


def test_resume_of_an_unknown_sweep(tmp_path):
    code, _, err = run_cli("sweep", "--resume", "nope", "--runs-root", str(tmp_path / "runs"))
    assert_one_line_error(code, err, "no sweep 'nope'")
    assert code == 6
    assert not (tmp_path / "runs").exists()


def test_a_second_grid_of_the_same_name_is_refused(tmp_path, env, fake_site, monkeypatch):
    monkeypatch.syspath_prepend(str(fake_site))
    monkeypatch.setenv("CIFARFW_FAKES_DIR", env["CIFARFW_FAKES_DIR"])
    (tmp_path / "runs" / "sweeps" / "g").mkdir(parents=True)
    (tmp_path / "runs" / "sweeps" / "g" / "manifest.json").write_text('{"version": 1, "runs": {}}')
    code, _, err = run_cli("sweep", "--plugin", "fake", "--grid", "lr=0.1,0.2", "--name", "g", *SMALL,
                           "--runs-root", str(tmp_path / "runs"))  # fmt: skip
    assert_one_line_error(code, err, "sweep 'g' exists", "--resume g")


def test_plugin_modules_import_neither_optuna_nor_ray():
    code = "import sys, cifarfw_sweep.plugin, cifarfw_ray.plugin; print(sorted({'optuna', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_ray_retry_takes_over_the_dead_nodes_lock(tmp_path):
    """Ray runs a task again only after its node died: the run that node left is resumed with
    --force-unlock, not waited for forever (its lock names another host)."""
    import json

    from cifarfw_sweep.executors import Job, command_for

    run_dir = tmp_path / "20260101-000000-softmax-s0-s1-abcd"
    run_dir.mkdir()
    record = {"schema_version": 2, "id": run_dir.name, "status": "running", "plugin": "fake", "model": "softmax",
              "config": {}, "epochs": [], "final": None, "started_at": "2026-01-01T00:00:00.000+00:00",
              "sweep": {"name": "s1", "index": 3, "params": {}}}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(record))
    (run_dir / ".lock").write_text(json.dumps({"host": "a-dead-node", "pid": 4242, "start": 1}))
    job = Job("s1", 3, {}, 0, ["--plugin", "fake"], str(tmp_path))
    assert command_for(job, take_foreign=True) == [
        "run",
        "--resume",
        str(run_dir),
        "--runs-root",
        str(tmp_path),
        "--force-unlock",
    ]
