"""The Optuna side of ``cifarfw sweep --search optuna``: storage, study, and the pruning reporter.

Optuna is imported inside these functions only: plugin modules are imported by every
``cifarfw`` start, and ``cifarfw --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarfw import hookimpl
from cifarfw.errors import UsageError
from cifarfw_sweep.executors import OPTUNA_ENV

if TYPE_CHECKING:
    import optuna

    from cifarfw.runs import Run
    from cifarfw_sweep.plan import Space

SAMPLERS = ("tpe", "random")
PRUNERS = ("none", "median")
DB_FILE = "optuna.db"


def default_storage(runs_root: str | Path) -> str:
    """An SQLite file in the runs root: nothing to set up, and every sweep there shares it."""
    return f"sqlite:///{(Path(runs_root) / 'sweeps' / DB_FILE).resolve()}"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at ``url``; a one-line UsageError when it cannot be opened."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Several processes write one SQLite file (the trials' epochs, the sweep's tells): wait for
    # the lock instead of failing on "database is locked".
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as err:  # any driver, any reason: the URL is the user's to fix
        detail = " ".join(str(err).split())[:200]
        raise UsageError(f"cannot open the Optuna storage {url!r}: {type(err).__name__}: {detail}") from None


def open_study(
    storage: optuna.storages.RDBStorage,
    name: str,
    direction: str,
    sampler: str = "tpe",
    prune: str = "none",
    seed: int | None = None,
) -> optuna.Study:
    """Create study ``name``, or join it when it exists (another machine's sweep of that name)."""
    import optuna

    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    try:
        return optuna.create_study(
            storage=storage,
            study_name=name,
            direction=direction,
            sampler=samplers[sampler](seed=seed),
            pruner=make_pruner(prune),
            load_if_exists=True,
        )
    except ValueError as err:  # e.g. the existing study optimises in the other direction
        raise UsageError(f"cannot join the Optuna study {name!r}: {err}") from None


def make_pruner(prune: str) -> optuna.pruners.BasePruner:
    """The study's pruner. Optuna does not store it with the study, so each trial's run makes
    its own from the name it is given (``trial_env``)."""
    import optuna

    if prune == "median":
        # From the first epoch, once two trials have finished: the sweeps this serves are
        # short, and Optuna's default of five startup trials would leave little to prune.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """This trial's parameters: categorical over each grid key, numeric over each range."""
    params: dict[str, Any] = {}
    for key, values in space.grid.items():
        params[key] = trial.suggest_categorical(key, values)
    for key, rng in space.ranges.items():
        if rng.is_int:
            params[key] = trial.suggest_int(key, int(rng.low), int(rng.high), log=rng.log)
        else:
            params[key] = trial.suggest_float(key, float(rng.low), float(rng.high), log=rng.log)
    return params


def check_categorical(space: Space) -> None:
    for key, values in space.grid.items():
        bad = [v for v in values if v is not None and not isinstance(v, bool | int | float | str)]
        if bad:
            raise UsageError(f"--grid {key}: a search takes numbers, strings or booleans, got {bad[0]!r}")


def trial_env(url: str, study: str, trial_id: int, metric: str, prune: str) -> dict[str, str]:
    """What tells a run's pruning reporter its trial."""
    spec = {"storage": url, "study": study, "trial_id": trial_id, "metric": metric, "prune": prune}
    return {OPTUNA_ENV: json.dumps(spec)}


class OptunaPruner:
    """Reports the trial's metric at every epoch; asks the run to stop, status ``pruned``,
    when the study's pruner says so (the run ends at that epoch's checkpoint)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import optuna

        storage = open_storage(spec["storage"])
        study = optuna.load_study(
            study_name=spec["study"], storage=storage, pruner=make_pruner(spec.get("prune", "none"))
        )
        self.trial = optuna.trial.Trial(study, int(spec["trial_id"]))
        self.metric = str(spec["metric"])

    @hookimpl
    def on_epoch_end(self, run: Run, epoch: int, metrics: dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            run.request_stop("pruned")


class _Silent:
    """The reporter outside a search (no trial to report to): does nothing."""


def pruning_reporter(run: Run) -> object:
    raw = os.environ.get(OPTUNA_ENV)
    if not raw:
        return _Silent()
    return OptunaPruner(json.loads(raw))
