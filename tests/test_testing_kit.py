"""cifarfw.testing, the contract kit: it passes a good plugin and names what breaks a bad one."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import pytest
from fakes import FAKE_PLUGIN
from fixtures import kit_plugins

from cifarfw import hookimpl, testing
from cifarfw.specs import ModelSpec, ReporterSpec, TrainerSpec
from cifarfw.testing import ContractError, ModelPluginContract, check_model_plugin


class NumpyAdapter:
    """The kit's FrameworkAdapter for the fake numpy framework of tests/fakes.py."""

    @staticmethod
    def _flat(images):
        return images[:, ::4, ::4, :].reshape(len(images), -1)

    def build(self, spec, num_classes, options):
        model = spec.factory(num_classes=num_classes, options=dict(options))
        model.w = np.random.default_rng(0).normal(0, 0.01, model.w.shape)
        return model

    def forward(self, model, images):
        return model.logits(self._flat(images))

    def count_params(self, model):
        n = model.w.size + model.b.size
        return n, n

    def loss_before_after(self, model, images, labels, steps):
        x = self._flat(images)

        def loss():
            z = model.logits(x)
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            return float(-np.log(p[np.arange(len(labels)), labels]).mean()), p

        before = loss()[0]
        for _ in range(steps):
            p = loss()[1]
            p[np.arange(len(labels)), labels] -= 1
            model.w -= 0.05 * x.T @ p / len(labels)
            model.b -= 0.05 * p.mean(axis=0)
        return before, loss()[0]


@pytest.fixture
def no_entry_points(entry_points, clean_env):
    entry_points()  # nothing installed: the kit sees only the plugin under test


def check(plugin, **kwargs):
    kwargs.setdefault("adapter", NumpyAdapter())
    return check_model_plugin(plugin, name="p", raise_on_failure=False, **kwargs)


def failed(report):
    return {r.name.split("[")[0]: r.detail for r in report.failures}


def test_a_good_plugin_passes_every_check(no_entry_points, tmp_path):
    report = check(FAKE_PLUGIN, runs_root=tmp_path / "runs", expected_params={"total": 1930, "trainable": 1930})
    assert report.ok, report
    names = [r.name for r in report.results]
    assert names == ["registration", "hooks", "light-import", "forward[softmax]", "learns[softmax]",
                     "recipes[softmax]", "trainer-run[softmax]"]  # fmt: skip
    assert all(r.ok for r in report.results)
    (run_dir,) = (p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert (run_dir / "run.json").is_file()


def test_failures_raise_with_every_failed_check_named(no_entry_points):
    with pytest.raises(ContractError, match=r"FAIL forward\[seven\].*\(4, 7\)"):
        check_model_plugin(kit_plugins.IGNORES_NUM_CLASSES, name="p", adapter=NumpyAdapter(), skip=["light-import"])


def test_wrong_parameter_count_is_reported(no_entry_points):
    report = check(FAKE_PLUGIN, expected_params={"total": 350_366}, skip=["trainer-run", "light-import"])
    assert "expected 350,366" in failed(report)["forward"]


def test_hook_name_typo_is_reported(no_entry_points):
    report = check(kit_plugins.TYPO, skip=["trainer-run", "light-import"])
    assert "register_model is marked @hookimpl but is not a cifarfw hook" in failed(report)["hooks"]
    assert "did you mean 'register_models'" in failed(report)["hooks"]


def test_framework_imported_at_module_level_is_reported():
    with pytest.raises(ContractError, match="imports jax; cifarfw loads every plugin"):
        testing.check_import_is_light("fixtures.heavy_plugin")
    testing.check_import_is_light("fixtures.kit_plugins")  # imports only cifarfw and numpy


def test_plugin_without_models_fails_registration(no_entry_points):
    class Empty:
        pass

    report = check(Empty())
    assert "registers no model" in failed(report)["registration"]
    assert [r.name for r in report.results] == ["registration"]


def test_recipe_the_trainer_rejects_is_reported(no_entry_points):
    plugin = kit_plugins.BadTrainerPlugin(
        kit_plugins.NumpyTrainer, recipes={"ok": {"lr": 0.05}, "gpu": {"precision": "fp16"}}
    )
    report = check(plugin, adapter=None, skip=["light-import", "trainer-run"])
    assert "recipe 'gpu' does not resolve: fp16 is not supported" in failed(report)["recipes"]
    skipped = {r.name for r in report.results if r.ok is None}
    assert {"forward[bad-model]", "learns[bad-model]"} <= skipped  # no adapter for numpy-bad


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        (kit_plugins.PercentTrainer, "accuracies are fractions 0-1"),
        (kit_plugins.NoPredictionsTrainer, "emitted on_predictions 0 times"),
    ],
)
def test_trainer_breaking_the_event_contract_is_reported(no_entry_points, trainer, message):
    report = check(kit_plugins.BadTrainerPlugin(trainer), adapter=None, skip=["light-import"])
    assert message in failed(report)["trainer-run"]


def test_model_that_cannot_learn_is_reported(no_entry_points):
    class Stuck(NumpyAdapter):
        def loss_before_after(self, model, images, labels, steps):
            return 2.3, 2.3

    report = check(FAKE_PLUGIN, adapter=Stuck(), skip=["light-import", "trainer-run"])
    assert "did not lower the loss (2.3000 -> 2.3000)" in failed(report)["learns"]


def test_torch_adapter_on_tiny_models():
    torch = pytest.importorskip("torch")
    kit = pytest.importorskip("cifarfw_torch.kit")  # the torch trainer plugin's adapter

    def tiny(num_classes, options):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16 * 3, num_classes))

    def frozen(num_classes, options):
        model = tiny(num_classes, options)
        model.requires_grad_(False)
        return model

    adapter = kit.TorchAdapter()
    spec = ModelSpec("tiny", "torch", tiny, input_size=16)
    model = testing.check_forward(adapter, spec, {})
    assert adapter.count_params(model) == (16 * 16 * 3 * 10 + 10,) * 2
    testing.check_learns(adapter, spec, {}, batch=10, steps=5)
    with pytest.raises(ContractError, match="no trainable parameters"):
        testing.check_learns(adapter, ModelSpec("frozen", "torch", frozen, input_size=16), {}, batch=10, steps=5)
    with pytest.raises(ContractError, match=r"a forward pass on a \(4, 32, 32, 3\) batch fails"):
        testing.check_forward(adapter, ModelSpec("wrong-size", "torch", tiny, input_size=32), {})
    with pytest.raises(ContractError, match=r"not a torch\.nn\.Module"):
        testing.check_forward(adapter, ModelSpec("numpy", "torch", lambda num_classes, options: object()), {})


class TestFakeThroughTheContractClass(ModelPluginContract):
    """The pytest-class form of the kit, as a plugin's tests/test_contract.py uses it."""

    plugin = FAKE_PLUGIN
    adapter = NumpyAdapter()
    expected_params: Mapping[str, int] = {"total": 1930, "trainable": 1930}

    @pytest.fixture(autouse=True)
    def _isolated(self, no_entry_points):
        pass


# --- the CLI helpers ---------------------------------------------------------------------------


def test_run_cli_returns_the_exit_code_and_both_streams(clean_env):
    code, out, err = testing.run_cli("--version")
    assert (code, err) == (0, "") and out.startswith("cifarfw, version ")
    code, out, err = testing.run_cli("run", "--plugin", "no-such-plugin")
    assert code == 2 and out == ""
    line = testing.assert_one_line_error(code, err, "no-such-plugin")
    assert line == err.strip()


@pytest.mark.parametrize(
    ("code", "err", "complaint"),
    [
        (0, "Error: wrong\n", "exit code 0"),
        (2, "Traceback (most recent call last):\nError: wrong\n", "Traceback"),
        (2, "Error: wrong\nError: again\n", "one error line"),
        (2, "wrong\n", "Error: "),
        (2, "Error: wrong\n", "'right'"),
    ],
)
def test_assert_one_line_error_refuses_what_the_cli_must_not_print(code, err, complaint):
    with pytest.raises(AssertionError, match=complaint):
        testing.assert_one_line_error(code, err, "right")
    testing.assert_one_line_error(2, "warning: kept apart\nError: right here\n", "right")


# --- the adapter comes from the framework's trainer -------------------------------------------


class AdapterTrainerPlugin(kit_plugins.BadTrainerPlugin):
    """The fake trainer, declaring (or not) the kit's adapter as a trainer plugin does."""

    def __init__(self, adapter):
        super().__init__(kit_plugins.NumpyTrainer)
        self.adapter = adapter

    @hookimpl
    def register_trainers(self, register):
        register(TrainerSpec("bad", "numpy-bad", self.trainer, adapter=self.adapter))


def test_the_trainer_declares_the_adapter(no_entry_points):
    report = check_model_plugin(AdapterTrainerPlugin(NumpyAdapter), name="p", skip=["light-import", "trainer-run"])
    assert {r.name: r.ok for r in report.results}["learns[bad-model]"] is True


def test_a_trainer_without_adapter_skips_forward_and_learns_with_the_reason(no_entry_points):
    report = check_model_plugin(AdapterTrainerPlugin(None), name="p", skip=["light-import", "trainer-run"])
    skipped = {r.name: r.detail for r in report.results if r.ok is None}
    assert "declares no test-kit adapter (TrainerSpec.adapter)" in skipped["forward[bad-model]"]


# --- reporter plugins ---------------------------------------------------------------------------


class NotingReporter:
    """Notes each event in a file of the run folder, as a reporter plugin would."""

    def __init__(self, run, fail_at=None):
        self.path, self.fail_at = run.dir / "notes.txt", fail_at

    def _note(self, text):
        with self.path.open("a") as f:
            f.write(text + "\n")

    @hookimpl
    def on_run_start(self, run):
        self._note("start")

    @hookimpl
    def on_epoch_end(self, run, epoch, metrics):
        if epoch == self.fail_at:
            raise ValueError("no room")
        self._note(f"epoch {epoch} {metrics['test_acc']:.3f}")

    @hookimpl
    def on_run_end(self, run, status):
        self._note(status)


class ReporterPlugin:
    def __init__(self, fail_at=None, default=True):
        self.fail_at, self.default = fail_at, default

    @hookimpl
    def register_reporters(self, register):
        factory = functools.partial(NotingReporter, fail_at=self.fail_at)
        register(ReporterSpec("notes", factory, "notes each event", default=self.default))


@pytest.mark.parametrize("default", [True, False])
def test_a_good_reporter_plugin_passes(no_entry_points, tmp_path, default):
    report = testing.check_reporter_plugin(ReporterPlugin(default=default), name="r", runs_root=tmp_path, epochs=3)
    assert [r.name for r in report.results] == ["registration", "hooks", "light-import", "reporter-run[notes]"]
    assert report.ok, report
    assert report.results[-1].detail == "received on_run_start, on_epoch_end, on_run_end"
    (run_dir,) = (p for p in tmp_path.iterdir() if p.is_dir())
    notes = (run_dir / "notes.txt").read_text().splitlines()
    assert notes[0] == "start" and [n.split()[1] for n in notes[1:4]] == ["1", "2", "3"] and notes[-1] == "finished"


def test_a_reporter_that_raises_is_named_with_its_hook(no_entry_points):
    report = testing.check_reporter_plugin(ReporterPlugin(fail_at=2), name="r", raise_on_failure=False)
    (failure,) = report.failures
    assert failure.name == "reporter-run[notes]"
    assert failure.detail == "reporter 'notes' raised in on_epoch_end: ValueError: no room"


def test_a_reporter_plugin_without_reporters_fails_registration(no_entry_points):
    with pytest.raises(ContractError, match=r"registers no reporter: add a @hookimpl register_reporters"):
        testing.check_reporter_plugin(FAKE_PLUGIN, name="r")


class TestReporterThroughTheContractClass(testing.ReporterPluginContract):
    plugin = ReporterPlugin()

    @pytest.fixture(autouse=True)
    def _isolated(self, no_entry_points):
        pass


def test_a_zoo_plugin_is_checked_on_a_sample_of_its_models(no_entry_points, tmp_path):
    """A provider's first listed model stands for the zoo; ``model=`` picks another."""
    import plugins_fixture.zoo as zoo
    from fakes import FakeModelPlugin

    class Zoo:  # the zoo and, for the trainer run, the numpy trainer
        CIFARFW_HOOK_API = 2
        register_model_providers = staticmethod(zoo.register_model_providers)
        register_trainers = FakeModelPlugin.register_trainers

    report = check(Zoo(), runs_root=tmp_path / "runs")
    assert report.ok, str(report)
    assert any(r.name.endswith("[zoo/tiny]") for r in report.results)
    report = check(Zoo(), model="wide", runs_root=tmp_path / "runs")
    assert report.ok and any(r.name.endswith("[zoo/wide]") for r in report.results)
    with pytest.raises(ContractError, match="no model 'deep'"):
        check_model_plugin(Zoo(), model="deep", name="p", adapter=NumpyAdapter())
