"""Seeds of one config on one dataset form one group whatever path the data was read from
(issue 17): the data counts by name, sizes, subset and verification, never by its folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fakes import FAKE_PLUGIN
from test_data import md5sum_file, write_cifar

from cifarfw import runner, runs
from cifarfw.plugins import PluginHost
from cifarfw_compare import compare


def _run(root: Path, seed: int, data_dir: Path, sums: Path, **flags: object) -> dict:
    host = PluginHost(load_entry_points=False)
    host.add(FAKE_PLUGIN, "fake")
    values = {"seed": seed, "runs_root": str(root), "dataset": "cifar10", "data_dir": str(data_dir),
              "data_checksums": str(sums), "epochs": 1, "prediction_samples": 0, **flags}  # fmt: skip
    plugin, spec, config = runner.resolve(host, "fake", None, {}, values)
    return json.loads((runner.execute(host, plugin, spec, config) / "run.json").read_text())


def test_two_paths_of_the_same_files_are_one_group(tmp_path):
    folder = write_cifar(tmp_path / "a" / "cifar-10-batches-py")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    sums_a = md5sum_file(folder, tmp_path / "a.md5")
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
    other = write_cifar(tmp_path / "c" / "cifar-10-batches-py", per_file=30)
    different = _run(root, 3, tmp_path / "c", md5sum_file(other, tmp_path / "c.md5"))
    assert different["group"] != first["group"]
    table = compare.build(runs.select_runs(root))
    column = next(c for c in table.columns if c.group == first["group"])
    assert column.cells["seeds"] == "2 (0, 1)"
    assert [c.cells["seeds"] for c in table.columns].count("2 (0, 1)") == 1
    assert not any("data_dir=" in c.label or "data_checksums=" in c.label for c in table.columns)
