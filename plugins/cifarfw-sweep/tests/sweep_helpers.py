"""Helpers of the sweep tests (and the ray plugin's): the fake numpy plugin installed in a site
folder that every child process (a sweep's runs) sees through PYTHONPATH, and `cifarfw` in a
subprocess. A uniquely named module: every plugin's tests folder has a conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
SMALL = [
    "--dataset", "synthetic", "--set", "dataset_options.train_size=100", "--set", "dataset_options.test_size=50",
    "--batch-size", "50", "--set", "prediction_samples=0",
]  # fmt: skip


@pytest.fixture(scope="session")
def fake_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("sweep-fake-site")
    shutil.copy(HERE / "fake" / "cifarfw_sweep_fake.py", site / "cifarfw_sweep_fake.py")
    info = site / "cifarfw_sweep_fake-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cifarfw-sweep-fake\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[cifarfw]\nfake = cifarfw_sweep_fake\n")
    return site


@pytest.fixture
def env(fake_site, monkeypatch) -> dict[str, str]:
    """The environment of a `cifarfw` process that sees the fake plugin (and no GPU)."""
    out = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "CIFARFW_FAKES_DIR": str(ROOT / "tests")}
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake_site), os.environ.get("PYTHONPATH", "")]))
    for key in ("CIFARFW_RECORD_EXTRA", "CIFARFW_SWEEP_OPTUNA", "CIFARFW_PLUGINS"):
        out.pop(key, None)
    return out


def cifarfw(env: dict[str, str], *args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cifarfw", *args], capture_output=True, text=True, env=env, timeout=timeout, **kwargs
    )
