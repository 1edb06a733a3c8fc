"""Issue 7's "done when": `cifarfw new-plugin` for each framework, pip-installed into this
environment, runs for one epoch on synthetic data and passes its own generated tests.

Each test generates the plugin in a temporary folder, installs it editable (no deps: they
are here), runs `cifarfw run` and the generated tests in subprocesses, and uninstalls it.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def trainer_installed(framework: str) -> bool:
    return any(ep.name == framework for ep in metadata.entry_points(group="cifarfw"))


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_new_plugin_installs_runs_and_passes_its_own_tests(framework, tmp_path):
    if not trainer_installed(framework):
        pytest.skip(f"the {framework} trainer (cifarfw-{framework}) is not installed: `cifarfw plugins` lacks it")
    name = f"mine-{framework}"
    env_cli = [str(BIN / "cifarfw")]
    made = subprocess.run(
        [*env_cli, "new-plugin", name, "--framework", framework, "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    folder = tmp_path / f"cifarfw-{name}"
    installed = pip("install", "--no-deps", "--no-build-isolation", "-e", str(folder))
    assert installed.returncode == 0, installed.stderr
    try:
        runs = tmp_path / "runs"
        run = subprocess.run(
            [*env_cli, "run", "--plugin", name, "--dataset", "synthetic", "--epochs", "1", "--runs-root", str(runs),
             "--set", "dataset_options.train_size=200", "--set", "dataset_options.test_size=100"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        (run_dir,) = (p for p in runs.iterdir() if p.is_dir())
        record = json.loads((run_dir / "run.json").read_text())
        assert (record["status"], record["plugin"], record["framework"]) == ("finished", name, framework)
        assert record["params"]["trainable"] == 94_762  # the template's CNN at width 32
        assert len(record["epochs"]) == 1 and 0 <= record["final"]["test_acc"] <= 1

        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=folder, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
        assert "8 passed" in tests.stdout, tests.stdout[-2000:]
    finally:
        removed = pip("uninstall", "-y", f"cifarfw-{name}")
        assert removed.returncode == 0, removed.stderr
    assert not trainer_installed(name)
