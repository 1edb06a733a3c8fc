"""Seeds of one config on one dataset form one group whatever path the data was read from
(issue 17): the data counts by name, sizes, subset and verification, never by its folder."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
from fakes import FAKE_PLUGIN

import cifarfw_cifar10.plugin as cifar10_plugin
from cifarfw import runner, runs
from cifarfw.plugins import PluginHost
from cifarfw_cifar10 import cifar10
from cifarfw_compare import compare


def _cifar(data_dir: Path, per_file: int = 20, seed: int = 0) -> Path:
    """A tiny CIFAR-10 copy in the official layout under ``data_dir``; returns its md5sum file
    (written beside the folder, as ../shared/data keeps its own)."""
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in (*cifar10.TRAIN_FILES, *cifar10.TEST_FILES):
        pixels = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({"labels": [i % 10 for i in range(per_file)], "data": pixels}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(cifar10.CLASS_NAMES)}))
    sums = data_dir.with_suffix(".md5")
    sums.write_text("".join(f"{hashlib.md5(f.read_bytes()).hexdigest()}  {f.name}\n" for f in sorted(folder.iterdir())))
    return sums


def _run(root: Path, seed: int, data_dir: Path, sums: Path, **flags: object) -> dict:
    host = PluginHost(load_entry_points=False)
    host.add(FAKE_PLUGIN, "fake")
    host.add(cifar10_plugin, "cifar10")  # the default dataset's plugin
    values = {"seed": seed, "runs_root": str(root), "dataset": "cifar10", "data_dir": str(data_dir),
              "data_checksums": str(sums), "epochs": 1, "prediction_samples": 0, **flags}  # fmt: skip
    plugin, spec, config = runner.resolve(host, "fake", None, {}, values)
    return json.loads((runner.execute(host, plugin, spec, config) / "run.json").read_text())


def test_two_paths_of_the_same_files_are_one_group(tmp_path):
    sums_a = _cifar(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    sums_b = shutil.copy(sums_a, tmp_path / "b.md5")
    root = tmp_path / "runs"
    first = _run(root, 0, tmp_path / "a", sums_a)
    second = _run(root, 1, tmp_path / "b", Path(sums_b))
    assert first["config"]["data_dir"] != second["config"]["data_dir"]
    assert first["group"] == second["group"]
    # The subset taken is part of what the data is: a smaller train_limit is another group.
    limited = _run(root, 2, tmp_path / "a", sums_a, train_limit=50)
    assert limited["group"] != first["group"]
    # So are the files: a copy whose content differs in size is another group.
    different = _run(root, 3, tmp_path / "c", _cifar(tmp_path / "c", per_file=30))
    assert different["group"] != first["group"]
    table = compare.build(runs.select_runs(root))
    column = next(c for c in table.columns if c.group == first["group"])
    assert column.cells["seeds"] == "2 (0, 1)"
    assert [c.cells["seeds"] for c in table.columns].count("2 (0, 1)") == 1
    assert not any("data_dir=" in c.label or "data_checksums=" in c.label for c in table.columns)


def test_two_different_copies_of_the_same_size_are_two_groups(tmp_path):
    """Two copies of equal size, each accepted by its own checksum file, differ in content: the
    dataset's digest keeps their runs apart."""
    one = _run(tmp_path / "runs", 0, tmp_path / "a", _cifar(tmp_path / "a", seed=1))
    other = _run(tmp_path / "runs", 1, tmp_path / "b", _cifar(tmp_path / "b", seed=2))
    assert one["dataset"]["digest"] != other["dataset"]["digest"]
    assert one["group"] != other["group"]
