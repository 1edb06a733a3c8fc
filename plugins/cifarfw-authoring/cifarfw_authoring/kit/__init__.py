"""The contract test kit: checks a model or reporter plugin against the cifarfw contract.

A plugin runs it against itself, in one line::

    from cifarfw.testing import check_model_plugin

    def test_contract(tmp_path):
        check_model_plugin("mine", runs_root=tmp_path)      # entry-point name, module or object

or by subclassing the pytest class, which gives one test per check::

    from cifarfw.testing import ModelPluginContract

    class TestMine(ModelPluginContract):
        plugin = "mine"

Reporter plugins have :func:`check_reporter_plugin` and :class:`ReporterPluginContract`.
The checks, by the names ``skip=`` takes (docs/plugin-guide.md explains each):

* ``registration``: the plugin registers through the real hooks into a fresh
  :class:`~cifarfw.plugins.PluginHost`, without errors, at least one model (reporter);
* ``hooks``: every hook implementation is a cifarfw hook (no typos) and the plugin's
  declared ``CIFARFW_HOOK_API`` is one this core supports;
* ``light-import``: importing the plugin module imports no deep-learning framework
  (``cifarfw --help`` loads every plugin);
* ``forward``: the model builds and maps a batch at its declared input size to
  ``(batch, num_classes)`` finite outputs;
* ``learns``: a few optimizer steps on a tiny fixed batch lower the loss;
* ``recipes``: every recipe resolves to a valid config the trainer accepts;
* ``trainer-run``: the framework's registered trainer trains the model through
  :mod:`cifarfw.runner` on a tiny synthetic dataset, emitting the events in order, and
  run.json reports the parameter counts, every epoch's metrics and the final metrics;
* ``reporter-run``: each reporter receives the events of a small real run (the kit's own
  numpy trainer on synthetic data) in order, and raises nothing.

``forward`` and ``learns`` need a :class:`FrameworkAdapter`: the one the framework's
trainer plugin declares (``TrainerSpec.adapter``; cifarfw-torch and cifarfw-keras have
one), or one passed as ``adapter=``. Without one they are skipped, with the reason.

Two helpers for a plugin's own CLI tests: :func:`run_cli` runs ``cifarfw ...`` in this
process and returns ``(exit code, stdout, stderr)``; :func:`assert_one_line_error` checks
that a user error ended as the CLI promises (one ``Error:`` line, non-zero, no traceback).
Nothing here imports a framework.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarfw.specs import ModelSpec, ReporterSpec
from cifarfw_authoring.kit.base import (
    HEAVY_MODULES,
    NUM_CLASSES,
    CheckResult,
    Checks,
    ContractError,
    ContractReport,
    PluginUnderTest,
    check_hooks,
    check_import_is_light,
    declared_hook_api,
    framework_adapter,
    hook_problems,
    load_plugin,
    module_name,
)
from cifarfw_authoring.kit.models import (
    FrameworkAdapter,
    check_forward,
    check_learns,
    check_params,
    check_recipes,
    check_trainer_run,
)
from cifarfw_authoring.kit.reporters import KIT_PLUGIN, NumpyPlugin, check_reporter_run

__all__ = [
    "HEAVY_MODULES",
    "NUM_CLASSES",
    "CheckResult",
    "ContractError",
    "ContractReport",
    "FrameworkAdapter",
    "KitSettings",
    "ModelPluginContract",
    "PluginUnderTest",
    "ReporterPluginContract",
    "assert_one_line_error",
    "check_forward",
    "check_hooks",
    "check_import_is_light",
    "check_learns",
    "check_model_plugin",
    "check_params",
    "check_recipes",
    "check_reporter_plugin",
    "check_reporter_run",
    "check_trainer_run",
    "declared_hook_api",
    "hook_problems",
    "load_plugin",
    "run_cli",
]


# --- CLI helpers for a plugin's own tests -----------------------------------------------------


def run_cli(*args: str) -> tuple[int, str, str]:
    """``cifarfw ARGS`` in this process: ``(exit code, stdout, stderr)``.

    Faster than a subprocess and sees monkeypatched state (environment, entry points);
    what child processes (torchrun) print goes to the real streams, not into the result.
    """
    from cifarfw.cli import main  # late: the CLI is not needed to check a plugin

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    """A user error as the CLI promises it: a non-zero exit and exactly one line on stderr,
    starting ``Error:``, holding each of ``fragments``, no traceback (``warning:`` lines
    aside). Returns that line."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code != 0, f"exit code 0, expected an error; stderr: {err!r}"
    assert "Traceback" not in err, f"a Traceback on stderr: {err!r}"
    assert len(lines) == 1, f"expected one error line, got {len(lines)}: {err!r}"
    assert lines[0].startswith("Error: "), f"the line does not start with 'Error: ': {lines[0]!r}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} is not in {lines[0]!r}"
    return lines[0]


# --- everything at once ----------------------------------------------------------------------


@dataclass
class KitSettings:
    """How :func:`check_model_plugin` checks each model (its keyword arguments)."""

    options: Mapping[str, Any] = field(default_factory=dict)
    adapter: FrameworkAdapter | None = None
    expected_params: Mapping[str, int] | None = None
    learn_batch: int = 20
    learn_steps: int = 8
    epochs: int = 1
    train_size: int = 60
    test_size: int = 30
    runs_root: str | os.PathLike | None = None


def _check_plugin(
    plugin: str | object,
    name: str | None,
    kind: str,
    skip: Sequence[str],
    raise_on_failure: bool,
    each: Callable[[Checks, PluginUnderTest], None],
) -> ContractReport:
    """registration, hooks and light-import, then ``each`` with the loaded plugin."""
    report = ContractReport(plugin if isinstance(plugin, str) else module_name(plugin))
    checks = Checks(report, skip)
    loaded: list[PluginUnderTest] = []
    others = [(NumpyPlugin(), KIT_PLUGIN)] if kind == "reporter" else None  # a reporter needs only a run

    def register() -> str:
        loaded.append(load_plugin(plugin, name, kind=kind, others=others))
        report.plugin = loaded[0].name
        specs = loaded[0].models if kind == "model" else loaded[0].reporters
        return "registers " + ", ".join(f"{kind}:{spec.name}" for spec in specs)

    if checks.attempt("registration", register):
        put = loaded[0]
        checks.attempt("hooks", lambda: check_hooks(put.obj))
        checks.attempt("light-import", lambda: check_import_is_light(put.obj))
        each(checks, put)
    if raise_on_failure and not report.ok:
        raise ContractError(str(report))
    return report


def check_model_plugin(
    plugin: str | object,
    model: str | None = None,
    *,
    name: str | None = None,
    skip: Sequence[str] = (),
    raise_on_failure: bool = True,
    **settings: Any,
) -> ContractReport:
    """Run every check on ``plugin`` (entry-point name, module name, module or object) and
    its ``model`` (default: every model it registers).

    Keyword arguments (see :class:`KitSettings`): ``options``, model options for the checks
    (e.g. ``{"weights": "none"}`` to avoid a download); ``expected_params``
    (``{"total": n, "trainable": m}``) pins the parameter counts; ``adapter``, a
    :class:`FrameworkAdapter` that replaces the one the framework's trainer declares;
    ``learn_batch``/``learn_steps``; ``epochs``/``train_size``/``test_size`` of the trainer
    run; ``runs_root`` (default: a temporary folder). ``skip`` names checks not to run
    (``registration``, ``hooks``, ``light-import``, ``forward``, ``learns``, ``recipes``,
    ``trainer-run``). Raises :class:`ContractError` listing the failures unless
    ``raise_on_failure`` is false; returns the report.
    """
    kit = KitSettings(**settings)

    def each(checks: Checks, put: PluginUnderTest) -> None:
        for spec in [put.model(model)] if model else put.models:
            _check_one_model(checks, put, spec, kit)

    return _check_plugin(plugin, name, "model", skip, raise_on_failure, each)


def _check_one_model(checks: Checks, put: PluginUnderTest, spec: ModelSpec, kit: KitSettings) -> None:
    from cifarfw.config import resolve_model_options

    tag = f"[{spec.name}]"
    resolved = resolve_model_options(spec, kit.options)
    fw, why = framework_adapter(put.host, spec.framework, kit.adapter)
    counts: list[tuple[int, int]] = []
    if fw is None:
        for check in ("forward", "learns"):
            checks.skipped(check + tag, why)
    else:

        def forward() -> str:
            counts.append(check_params(fw, check_forward(fw, spec, resolved), spec, kit.expected_params))
            total, trainable = counts[0]
            return (
                f"{spec.input_size}x{spec.input_size} -> (4, {NUM_CLASSES}); {total:,} params ({trainable:,} trainable)"
            )

        checks.attempt("forward" + tag, forward)
        checks.attempt("learns" + tag, lambda: check_learns(fw, spec, resolved, kit.learn_batch, kit.learn_steps))
    checks.attempt("recipes" + tag, lambda: "validate: " + (", ".join(check_recipes(put, spec, kit.options)) or "none"))

    def run() -> str:
        record = check_trainer_run(
            put, spec, kit.options, kit.runs_root, epochs=kit.epochs, train_size=kit.train_size,
            test_size=kit.test_size, expected_total_params=counts[0][0] if counts else None,
        )  # fmt: skip
        return f"run.json params {record['params']}, test_acc {record['epochs'][-1]['test_acc']:.3f}"

    checks.attempt("trainer-run" + tag, run)


def check_reporter_plugin(
    plugin: str | object,
    reporter: str | None = None,
    *,
    name: str | None = None,
    skip: Sequence[str] = (),
    raise_on_failure: bool = True,
    runs_root: str | os.PathLike | None = None,
    epochs: int = 2,
) -> ContractReport:
    """Check a reporter plugin: ``registration`` (at least one reporter), ``hooks``,
    ``light-import``, and ``reporter-run`` for ``reporter`` (default: each it registers):
    it receives the events of a small real run with ``epochs`` epochs (the kit's numpy
    trainer on synthetic data; run folders under ``runs_root``, default a temporary folder)
    and raises nothing. Raises :class:`ContractError` listing the failures unless
    ``raise_on_failure`` is false; returns the report."""

    def each(checks: Checks, put: PluginUnderTest) -> None:
        for spec in put.reporters:
            if reporter is None or spec.name == reporter:

                def run(spec: ReporterSpec = spec) -> str:
                    return "received " + ", ".join(
                        dict.fromkeys(check_reporter_run(put, spec, runs_root, epochs=epochs))
                    )

                checks.attempt(f"reporter-run[{spec.name}]", run)

    return _check_plugin(plugin, name, "reporter", skip, raise_on_failure, each)


# --- pytest ------------------------------------------------------------------------------------


class _PluginContract:
    """The checks every plugin kind shares, one pytest test each."""

    plugin: str | object = ""
    _kind = "model"

    def _put(self) -> PluginUnderTest:
        if not self.plugin:
            raise ContractError(f"{type(self).__name__}: set the class attribute plugin = '<entry-point name>'")
        others = [(NumpyPlugin(), KIT_PLUGIN)] if self._kind == "reporter" else None
        return load_plugin(self.plugin, kind=self._kind, others=others)

    def test_registration(self) -> None:
        put = self._put()
        assert put.host.plugins[put.name].status == "ok"

    def test_hooks(self) -> None:
        check_hooks(self._put().obj)

    def test_import_is_light(self) -> None:
        check_import_is_light(self._put().obj)


class ModelPluginContract(_PluginContract):
    """Subclass in a test module (``class TestMine(ModelPluginContract): plugin = "mine"``)
    to get one pytest test per check. Class attributes configure it like
    :func:`check_model_plugin`'s arguments."""

    model: str | None = None
    options: Mapping[str, Any] = {}
    expected_params: Mapping[str, int] | None = None
    adapter: FrameworkAdapter | None = None
    learn_batch: int = 20
    learn_steps: int = 8
    train_size: int = 60
    test_size: int = 30

    def _specs(self, put: PluginUnderTest) -> list[ModelSpec]:
        return [put.model(self.model)] if self.model else put.models

    def _fw(self, put: PluginUnderTest, spec: ModelSpec) -> FrameworkAdapter:
        fw, why = framework_adapter(put.host, spec.framework, self.adapter)
        if fw is None:
            import pytest

            pytest.skip(why)
        return fw

    def _options(self, spec: ModelSpec) -> dict[str, Any]:
        from cifarfw.config import resolve_model_options

        return resolve_model_options(spec, self.options)

    def test_forward(self) -> None:
        put = self._put()
        for spec in self._specs(put):
            fw = self._fw(put, spec)
            check_params(fw, check_forward(fw, spec, self._options(spec)), spec, self.expected_params)

    def test_learns(self) -> None:
        put = self._put()
        for spec in self._specs(put):
            check_learns(self._fw(put, spec), spec, self._options(spec), self.learn_batch, self.learn_steps)

    def test_recipes(self) -> None:
        put = self._put()
        for spec in self._specs(put):
            check_recipes(put, spec, self.options)

    def test_trainer_run(self, tmp_path: Path) -> None:
        put = self._put()
        for spec in self._specs(put):
            fw = framework_adapter(put.host, spec.framework, self.adapter)[0]
            total = fw.count_params(check_forward(fw, spec, self._options(spec)))[0] if fw else None
            check_trainer_run(
                put, spec, self.options, tmp_path / spec.name, train_size=self.train_size,
                test_size=self.test_size, expected_total_params=total,
            )  # fmt: skip


class ReporterPluginContract(_PluginContract):
    """Subclass (``class TestMine(ReporterPluginContract): plugin = "mine"``) to get one
    pytest test per check of :func:`check_reporter_plugin`; ``reporter`` and ``epochs``
    configure it like that function's arguments."""

    _kind = "reporter"
    reporter: str | None = None
    epochs: int = 2

    def test_reporter_run(self, tmp_path: Path) -> None:
        put = self._put()
        for spec in put.reporters:
            if self.reporter is None or spec.name == self.reporter:
                check_reporter_run(put, spec, tmp_path / spec.name, epochs=self.epochs)
