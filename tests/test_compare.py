"""`cifarfw compare`: real runs of two study-like configs x 2 seeds (fake numpy trainer),
every format with the same content, golden files, headless Chromium, bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_compare_support import make_failed_run, make_host, make_run, make_study_runs

from cifarfw import runs
from cifarfw.testing import assert_one_line_error

GOLDEN = Path(__file__).parent / "golden"
CHROMIUM = Path("/usr/bin/chromium")
STUDY_ROWS = (
    "Training accuracy",
    "Testing accuracy",
    "Training loss",
    "Testing loss",
    "Training time (s)",
    "Parameters (total)",
    "Parameters (trainable)",
    "Epochs",
    "Batch size",
    "Learning rate",
    "Optimizer",
    "Accelerator",
)
TRUST_ROWS = ("Dataset", "Official data", "Augmentation", "Precision", "Recipe", "Seeds")


def _main(*args: str) -> int:
    from cifarfw.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Four real runs (torch-cnn, keras-cnn stand-ins x seeds 0, 1) and the comparison of
    them in every format, written once by the CLI."""
    root = tmp_path_factory.mktemp("runs")
    dirs = make_study_runs(root)
    out = tmp_path_factory.mktemp("reports")
    refs = [d.name for d in dirs]
    outputs = {}
    for fmt in ("md", "csv", "json", "html"):
        path = out / f"compare.{fmt}"
        code = _main("compare", *refs, "--runs-root", str(root), "--with-study", "--format", fmt, "--output", str(path))
        assert code == 0, fmt
        outputs[fmt] = path.read_text(encoding="utf-8")
    return {"root": root, "dirs": dirs, "outputs": outputs}


# --- parsing every format back into {(row, column): cell} --------------------------------


def parse_md(text: str) -> tuple[dict, list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines]
    header, rows = split[0], split[2:]
    cells = {(row[0], col): value for row in rows for col, value in zip(header[1:], row[1:], strict=True)}
    notes = [line[2:] for line in text.splitlines() if line.startswith("- ")]
    return cells, notes


def parse_csv(text: str) -> tuple[dict, list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    body = [r for r in rows[1:] if r[0] not in ("Legend", "Note")]
    cells = {(row[0], col): value for row in body for col, value in zip(header[1:], row[1:], strict=True)}
    return cells, [r[1] for r in rows if r[0] == "Note"]


def parse_json(text: str) -> tuple[dict, list[str]]:
    data = json.loads(text)
    labels = {c["key"]: c["label"] for c in data["columns"]}
    cells = {(row["label"], labels[key]): value for row in data["rows"] for key, value in row["cells"].items()}
    return cells, data["notes"]


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.notes: list[str] = []
        self.images: list[dict[str, str]] = []
        self._cell: list[str] | None = None
        self._in_note = False
        self._in_table = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._in_table = True
        elif tag == "tr" and self._in_table:
            self.rows.append([])
        elif tag in ("td", "th") and self._in_table:
            self._cell = []
        elif tag == "li":
            self._in_note, self._cell = True, []
        elif tag == "img":
            self.images.append(dict(attrs))
        elif tag == "span" and "verdict" in (dict(attrs).get("class") or ""):
            self._verdict, self._saved, self._cell = True, self._cell, None  # beside the cell, not in it

    def handle_endtag(self, tag):
        if tag == "span" and getattr(self, "_verdict", False):
            self._verdict, self._cell = False, self._saved
        elif tag == "table":
            self._in_table = False
        elif tag in ("td", "th") and self._cell is not None and self._in_table:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "li" and self._in_note:
            self.notes.append("".join(self._cell or []))
            self._in_note, self._cell = False, None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_html(text: str) -> tuple[dict, list[str]]:
    parser = _TableParser()
    parser.feed(text)
    header, rows = parser.rows[0], parser.rows[1:]
    cells = {(row[0], col): value for row in rows for col, value in zip(header[1:], row[1:], strict=True)}
    return cells, parser.notes


PARSERS = {"md": parse_md, "csv": parse_csv, "json": parse_json, "html": parse_html}


# --- content -------------------------------------------------------------------------------


def test_md_has_every_study_row_with_mean_std_and_flags_augmentation(study, cli):
    code, out, err = cli("compare", "--runs-root", str(study["root"]), "--format", "md")
    assert code == 0, err
    cells, notes = parse_md(out)
    columns = sorted({col for _, col in cells})
    assert columns == ["keras-cnn (study)", "torch-cnn (study)"]
    rows = {row for row, _ in cells}
    for row in (*STUDY_ROWS, *TRUST_ROWS):
        assert row in rows, row
    # Each metric is the mean ± sample std over the two seeds' final results in run.json.
    for column, dirs in (("torch-cnn (study)", study["dirs"][:2]), ("keras-cnn (study)", study["dirs"][2:])):
        finals = [json.loads((d / "run.json").read_text())["final"] for d in dirs]
        accs = [100 * f["test_acc"] for f in finals]
        expected = f"{statistics.fmean(accs):.2f} ± {statistics.stdev(accs):.2f}% (n=2)"
        assert cells[("Testing accuracy", column)] == expected
        losses = [f["train_loss"] for f in finals]
        assert (
            cells[("Training loss", column)] == f"{statistics.fmean(losses):.4f} ± {statistics.stdev(losses):.4f} (n=2)"
        )
        assert cells[("Seeds", column)] == "2 (0, 1)"
        assert cells[("Official data", column)] == "no (generated)"
    assert cells[("Augmentation", "torch-cnn (study)")] == "crop (pad 4), flip, brightness 20%"
    assert cells[("Augmentation", "keras-cnn (study)")] == "none"
    assert cells[("Framework", "keras-cnn (study)")] == "keras"
    assert cells[("Learning rate", "keras-cnn (study)")] == "0.02"
    assert cells[("Precision", "torch-cnn (study)")] == "fp64"  # the trainer's resolved precision
    assert cells[("Parameters (total)", "torch-cnn (study)")] == "1,930"
    # The differing augmentation is flagged, and only that.
    assert cells[("Directly comparable", "keras-cnn (study)")] == "no: augmentation differs"
    flagged = [n for n in notes if n.startswith("Not directly comparable")]
    assert len(flagged) == 1 and "augmentation differs" in flagged[0]


def test_every_format_carries_the_same_content(study):
    parsed = {fmt: PARSERS[fmt](text) for fmt, text in study["outputs"].items()}
    md_cells, md_notes = parsed["md"]
    assert len({col for _, col in md_cells}) == 5  # two run groups + three study columns
    assert md_cells[("Testing accuracy", "Study: PyTorch CNN")] == "80.64%"
    assert md_cells[("Parameters (trainable)", "Study: AlexNet fine-tuned")] == "4,211,082"
    for fmt, (cells, notes) in parsed.items():
        assert cells == md_cells, fmt
        assert notes == md_notes, fmt


def test_json_keeps_the_numbers_and_the_runs(study):
    data = json.loads(study["outputs"]["json"])
    torch_col = next(c for c in data["columns"] if c["label"] == "torch-cnn (study)")
    assert [r["id"] for r in torch_col["runs"]] == [d.name for d in study["dirs"][:2]]
    assert torch_col["stats"]["test_acc"]["n"] == 2
    finals = [json.loads((d / "run.json").read_text())["final"]["test_acc"] for d in study["dirs"][:2]]
    assert torch_col["stats"]["test_acc"]["mean"] == pytest.approx(statistics.fmean(finals))


# --- golden files -------------------------------------------------------------------------


_STAT = re.compile(r"\d+\.\d+(?: ± \d+\.\d+)?%? \(n=\d+\)")


def _mask_stats(text: str) -> str:
    """``74.25 ± 2.47% (n=2)`` -> ``<x> ± <x>% (n=2)``: the values depend on the fake trainer
    (checked against run.json above), the format and the n must not change."""
    return _STAT.sub(lambda m: re.sub(r"\d+\.\d+", "<x>", m[0]), text)


def normalise(fmt: str, text: str, study: dict) -> str:
    """Run ids, the runs root, measured values and images replaced, so the files are stable."""
    for index, run_dir in enumerate(study["dirs"], start=1):
        text = text.replace(run_dir.name, f"RUN-{index}")
    text = text.replace(str(study["root"]), "<RUNS_ROOT>")
    if fmt == "json":
        data = json.loads(text)
        keys = {c["key"]: f"col-{i}" for i, c in enumerate(data["columns"])}
        for column in data["columns"]:
            column["key"] = keys[column["key"]]
            column["group"] = "<GROUP>" if column["group"] else ""
            for stat in column["stats"].values():
                stat.update({k: "<x>" for k in ("mean", "std") if stat.get(k) is not None})
        for row in data["rows"]:
            row["cells"] = {keys[k]: _mask_stats(v) for k, v in row["cells"].items()}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    text = _mask_stats(text)
    text = re.sub(r"wrong ones in red \(\d+ of", "wrong ones in red (<k> of", text)
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,<png>", text)


@pytest.mark.parametrize("fmt", ["md", "csv", "json", "html"])
def test_golden(study, fmt):
    got = normalise(fmt, study["outputs"][fmt], study)
    path = GOLDEN / f"compare.{fmt}"
    if os.environ.get("CIFARFW_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
    assert path.is_file(), f"no golden file {path}; run with CIFARFW_UPDATE_GOLDEN=1 to write it"
    assert got == path.read_text(encoding="utf-8"), f"{fmt} differs from {path} (CIFARFW_UPDATE_GOLDEN=1 rewrites)"


# --- the HTML report ----------------------------------------------------------------------


def test_html_is_self_contained_with_every_plot(study):
    text = study["outputs"]["html"]
    parser = _TableParser()
    parser.feed(text)
    alts = [img.get("alt", "") for img in parser.images]
    assert "training and test curves" in alts
    for column in ("torch-cnn (study)", "keras-cnn (study)"):
        for kind in ("confusion matrix", "per-class accuracy", "sample predictions"):
            assert f"{kind} of {column}" in alts
    assert all(img["src"].startswith("data:image/png;base64,") for img in parser.images)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert '"True: x, Pred: y"; wrong ones in red' in text


_CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(String(e.message || (e.target && (e.target.src || '').slice(0, 40)) || e));
}, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var div = document.createElement('div');
  div.id = 'cifarfw-check';
  div.textContent = 'images ' + ok + '/' + imgs.length + ' errors ' + window.__errors.length + ': ' + window.__errors.join(' | ');
  document.body.appendChild(div);
});
</script>"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_html_renders_in_headless_chromium_with_all_images_loaded(study, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(study["outputs"]["html"].replace("<head>", "<head>\n" + _CHECK_SCRIPT, 1), encoding="utf-8")
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    match = re.search(r'<div id="cifarfw-check">images (\d+)/(\d+) errors (\d+): ([^<]*)</div>', done.stdout)
    assert match, done.stderr[-2000:]
    loaded, total, errors, detail = int(match[1]), int(match[2]), int(match[3]), match[4]
    assert total == 7  # curves + (confusion, per-class, samples) for each of the two run columns
    assert loaded == total
    assert errors == 0, detail


# --- grouping, selection, the run command ---------------------------------------------


def test_latest_and_plugin_select_runs(study, cli):
    code, out, _ = cli("compare", "--runs-root", str(study["root"]), "--plugin", "keras-cnn")
    cells, _ = parse_md(out)
    assert code == 0 and {col for _, col in cells} == {"keras-cnn (study)"}
    code, out, _ = cli("compare", "--runs-root", str(study["root"]), "--latest", "1")
    cells, _ = parse_md(out)
    assert {col for _, col in cells} == {"keras-cnn (study)"}
    assert cells[("Seeds", "keras-cnn (study)")] == "1 (1)"
    assert cells[("Testing accuracy", "keras-cnn (study)")].endswith("% (n=1)")


def test_run_with_several_plugins_ends_with_the_comparison(cli, entry_points, tmp_path):
    entry_points(
        ("torch-cnn", "test_compare_support:TORCH_LIKE"),
        ("keras-cnn", "test_compare_support:KERAS_LIKE"),
        ("compare", "cifarfw_compare.plugin"),  # its on_session_end prints the table
    )
    root = tmp_path / "runs"
    code, out, err = cli(
        "run", "--plugin", "torch-cnn", "--plugin", "keras-cnn", "--runs-root", str(root),
        "--set", "dataset_options.train_size=200", "--set", "dataset_options.test_size=100",
        "--set", "prediction_samples=8",
    )  # fmt: skip
    assert code == 0, err
    table = out[out.index("Comparison of these runs") :]
    cells, notes = parse_md(table)
    assert {col for _, col in cells} == {"torch-cnn (study)", "keras-cnn (study)"}
    assert cells[("Status", "keras-cnn (study)")] == "finished"
    assert any("augmentation differs" in n for n in notes)


# --- unfinished runs, old records, bad input ------------------------------------------------


@pytest.fixture
def mixed_root(study, tmp_path):
    """The two finished torch-cnn seeds, a failed run, a 'running' one (killed: no lock) and
    a schema-0 copy of a keras-cnn run, under one root."""
    root = tmp_path / "mixed"
    root.mkdir()
    for run_dir in study["dirs"][:2]:
        shutil.copytree(run_dir, root / run_dir.name)
    running = root / "20990101-000000-torch-cnn-s2-0000"
    shutil.copytree(study["dirs"][1], running)
    record = json.loads((running / "run.json").read_text())
    record.update(status="running", final=None, seed=2, id=running.name)
    record["epochs"] = record["epochs"][:1]
    (running / "run.json").write_text(json.dumps(record))
    failed = make_failed_run(make_host(), root)
    old = root / "20000101-000000-keras-cnn-s0-0000"
    shutil.copytree(study["dirs"][2], old)
    record = json.loads((old / "run.json").read_text())
    for key in ("schema_version", "group", "final", "status", "resolved", "hardware"):
        record.pop(key)
    record["dataset"] = "synthetic"
    record["params"] = 1930
    (old / "run.json").write_text(json.dumps(record))
    return {"root": root, "running": running, "failed": failed, "old": old}


def test_unfinished_runs_are_shown_with_their_status_never_averaged(mixed_root, cli):
    code, out, err = cli("compare", "--runs-root", str(mixed_root["root"]))
    assert code == 0, err
    cells, notes = parse_md(out)
    columns = {col for _, col in cells}
    assert "torch-cnn (study) [running]" in columns
    assert "broken-cnn (study) [failed]" in columns
    assert cells[("Testing accuracy", "torch-cnn (study)")].endswith("(n=2)")  # the running seed is not in it
    assert cells[("Status", "torch-cnn (study)")] == "finished (1 unfinished run shown apart)"
    assert cells[("Status", "torch-cnn (study) [running]")] == (
        "running (epoch 1 of 2); no live process, probably killed"
    )
    assert cells[("Status", "broken-cnn (study) [failed]")].startswith("failed: RuntimeError: boom")
    assert cells[("Testing accuracy", "broken-cnn (study) [failed]")] == "10.00% (epoch 1)"
    assert any("never averaged" in n for n in notes)
    (mixed_root["running"] / ".lock").write_text(f"{os.getpid()}\n")  # now a live process holds it
    _, out, _ = cli("compare", "--runs-root", str(mixed_root["root"]))
    assert parse_md(out)[0][("Status", "torch-cnn (study) [running]")] == "running (epoch 1 of 2)"


def test_schema_zero_records_still_load_and_group_with_their_seeds(mixed_root, study, cli):
    old = mixed_root["old"]
    code, out, err = cli("compare", str(old), str(study["dirs"][2]), str(study["dirs"][3]), "--format", "md")
    assert code == 0, err
    cells, _ = parse_md(out)
    # The old record knows its data by name only (no sizes, no subset, no verification): it
    # cannot be shown to hold the same data as the new seeds, so it is a column of its own.
    columns = sorted({col for _, col in cells})
    assert len(columns) == 2 and all(c.startswith("keras-cnn (study) [") for c in columns), columns
    assert sorted(cells[("Seeds", c)] for c in columns) == ["1 (0)", "2 (0, 1)"]
    for column in columns:
        assert cells[("Parameters (total)", column)] == "1,930"
        assert cells[("Dataset", column)].startswith("synthetic")
    assert runs.load_entry(old).record["schema_version"] == runs.SCHEMA_VERSION


def test_a_newer_schema_is_refused_by_name_and_skipped_in_a_scan(mixed_root, cli):
    newer = mixed_root["old"]
    record = json.loads((newer / "run.json").read_text())
    record["schema_version"] = 99
    (newer / "run.json").write_text(json.dumps(record))
    code, _, err = cli("compare", str(newer))
    assert_one_line_error(code, err, "schema 99", "upgrade cifarfw")
    code, out, err = cli("compare", "--runs-root", str(mixed_root["root"]))
    assert code == 0
    assert "warning: skipping" in err and "schema 99" in err
    assert "keras-cnn" not in out


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("compare", "--runs-root", "{root}", "no-such-run"), ("no run 'no-such-run'",)),
        (("compare", "--runs-root", "{empty}"), ("no runs under",)),
        (("compare", "--runs-root", "{missing}"), ("does not exist",)),
        (("compare", "--runs-root", "{root}", "--plugin", "alexnet"), ("no runs of alexnet",)),
        (("compare", "--runs-root", "{root}", "--output", "{missing}/x.md"), ("cannot write", "does not exist")),
        (("compare", "--runs-root", "{root}", "--output", "{empty}"), ("is a folder",)),
        (("compare", "--runs-root", "{root}", "--output", "/proc/cifarfw-report.md"), ("cannot write",)),
        (("compare", "--runs-root", "{root}", "--latest", "0"), ("--latest",)),
        (("compare", "--runs-root", "{root}", "--format", "pdf"), ("pdf",)),
    ],
)
def test_bad_input_is_one_line(study, cli, tmp_path, args, fragments):
    empty = tmp_path / "empty"
    empty.mkdir()
    values = {"root": str(study["root"]), "empty": str(empty), "missing": str(tmp_path / "missing")}
    code, _, err = cli(*(a.format(**values) for a in args))
    assert_one_line_error(code, err, *fragments)


def test_a_single_run_is_compared_alone(cli, capsys, tmp_path):
    run_dir = make_run(make_host(), tmp_path / "one", "torch-cnn", seed=5)
    capsys.readouterr()  # the run's own console lines
    code, out, _ = cli("compare", "--runs-root", str(tmp_path / "one"), "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert code == 0
    assert rows[0] == ["Metric", "torch-cnn (study)"]
    assert dict((r[0], r[1]) for r in rows)["Runs"] == run_dir.name
    assert dict((r[0], r[1]) for r in rows)["Directly comparable"] == "yes"


def test_a_nan_run_is_shown_as_nan_and_the_json_stays_valid(study, cli, tmp_path):
    run_dir = tmp_path / "runs" / "20990101-000000-keras-cnn-s9-0000"
    shutil.copytree(study["dirs"][2], run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    record.update(status="nan", final=None, seed=9)
    record["epochs"][-1]["train_loss"] = float("nan")
    (run_dir / "run.json").write_text(json.dumps(record))
    code, out, err = cli("compare", "--runs-root", str(tmp_path / "runs"), "--format", "json")
    assert code == 0, err
    data = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    (column,) = data["columns"]
    assert column["status"] == "nan" and column["stats"]["train_loss"]["mean"] == "nan"
    cells = {row["key"]: row["cells"][column["key"]] for row in data["rows"]}
    assert cells["status"] == "nan (epoch 2 of 2)"
    assert cells["train_loss"] == "nan (epoch 2)"
