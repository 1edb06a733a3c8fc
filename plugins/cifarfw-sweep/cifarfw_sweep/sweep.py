"""``cifarfw sweep``: check everything, write the manifest, hand the runs to an executor.

A grid sweep is a fixed list of jobs (combinations x seeds); a search asks Optuna for each
next trial and tells it how the trial's run ended. Either way every run is an ordinary
``cifarfw run`` with the sweep's name, index and parameters in its record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import secrets
import socket
import sys
import time
import tomllib
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from cifarfw import config as config_mod
from cifarfw import runner
from cifarfw.errors import CifarfwError, UsageError
from cifarfw.metrics import BY_NAME
from cifarfw.plugins import PluginHost
from cifarfw.suggest import did_you_mean
from cifarfw_sweep import manifest, plan
from cifarfw_sweep.executors import DONE, Executor, Job, Outcome

PRUNER_REPORTER = "optuna-pruner"
# Keys of --sweep-file besides the run settings: the sweep's own flags.
FILE_KEYS = (
    "grid", "range", "plugin", "model", "name", "parallel", "executor", "search", "trials", "metric",
    "direction", "sampler", "prune", "storage", "set", "config",
)  # fmt: skip


@dataclass
class Request:
    """What a sweep asks for, as stored in its manifest (so ``--resume NAME`` needs nothing else)."""

    name: str
    runs_root: str
    plugins: list[str]
    model: str | None = None
    config_file: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    ranges: dict[str, list[Any]] = field(default_factory=dict)  # key -> [low, high, log]
    search: str | None = None
    trials: int = 20
    metric: str = "test_acc"
    direction: str = "maximize"
    sampler: str = "tpe"
    prune: str = "none"
    storage: str | None = None
    executor: str = "local"
    executor_options: dict[str, Any] = field(default_factory=dict)
    parallel: int | None = None

    def space(self) -> plan.Space:
        grid = dict(self.grid)
        if len(self.plugins) > 1:
            grid = {"plugin": list(self.plugins), **grid}
        ranges = {k: plan.Range(k, v[0], v[1], bool(v[2])) for k, v in self.ranges.items()}
        return plan.Space(grid, ranges)

    def file_layer(self) -> dict[str, Any]:
        return config_mod.load_file(self.config_file) if self.config_file else {}

    def flags_for(self, params: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
        flags = plan.apply(self.flags, params)
        flags.update(name=self.name, runs_root=self.runs_root)
        if seed is not None:
            flags.update(seed=seed, seeds=1)  # the sweep fans seeds out, one run each
        if self.search:
            flags["reporters"] = [*flags.get("reporters", []), PRUNER_REPORTER]
        return flags

    def with_plugin(self, params: dict[str, Any]) -> dict[str, Any]:
        """Params as recorded: the plugin first, always (one plugin is still a parameter)."""
        return {"plugin": params.get("plugin", self.plugins[0]), **{k: v for k, v in params.items() if k != "plugin"}}

    def job(self, params: dict[str, Any], seed: int, index: int, env: dict[str, str] | None = None) -> Job:
        params = self.with_plugin(params)
        model = params.get("model", self.model)
        argv = ["--plugin", params["plugin"], *(["--model", model] if model else [])]
        argv += ["--config", self.config_file] if self.config_file else []
        argv += plan.set_arguments(self.flags_for(params, seed))
        log = str(manifest.sweep_dir(self.runs_root, self.name) / "logs" / f"{index:04d}.log")
        return Job(self.name, index, params, seed, argv, self.runs_root, dict(env or {}), log)

    def resolve(self, host: PluginHost, params: dict[str, Any]) -> config_mod.RunConfig:
        """The run's resolved config (every check ``cifarfw run`` makes), nothing written."""
        params = self.with_plugin(params)
        flags = self.flags_for(params)
        if len(self.plugins) > 1 and "model_options" in self.flags:  # as `run` does with several plugins
            _, spec = host.resolve_model(params["plugin"], params.get("model", self.model))
            own = {o.name for o in spec.options}
            given = {k: v for k, v in self.flags["model_options"].items() if k in own}
            flags["model_options"] = {**given, **{k: v for k, v in flags["model_options"].items() if k in own}}
        try:
            return runner.resolve(host, params["plugin"], params.get("model", self.model), self.file_layer(), flags)[2]
        except CifarfwError as err:
            raise type(err)(f"{plan.label(params)}: {err}") from None


# --- building the request from flags -------------------------------------------------------------


def build_request(host: PluginHost, kw: dict[str, Any], run_flags: dict[str, Any]) -> Request:
    """The request the flags (and ``--sweep-file``) describe; every value checked, nothing written."""
    file: dict[str, Any] = {}
    if kw.get("sweep_file"):
        file = _read_sweep_file(kw["sweep_file"])
        file_sets = file.pop("set", {})
        for key in list(file):
            if key not in FILE_KEYS:  # a run setting given at the top level
                file_sets[key] = file.pop(key)
        run_flags = config_mod.merge(config_mod.validate_layer(file_sets, f"sweep file {kw['sweep_file']}"), run_flags)

    def pick(key: str, default: Any = None) -> Any:
        value = kw.get(key)
        return value if value not in (None, ()) else file.get(key, default)

    plugins = list(kw.get("plugin") or ()) or _as_list(file.get("plugin"))
    grid = plan.parse_grid(kw.get("grid") or ())
    for key, values in (file.get("grid") or {}).items():
        if key not in grid:
            texts = values if isinstance(values, list) else None
            parsed = texts if texts is not None else plan.parse_grid([f"{key}={values}"], "sweep file grid")[key]
            plan.add_grid(grid, key.replace("-", "_"), parsed, "sweep file grid")
    if "plugin" in grid:
        if plugins:
            raise UsageError("give the plugins with --plugin or with --grid plugin=A,B, not both")
        plugins = [str(p) for p in grid.pop("plugin")]
    if not plugins:
        raise UsageError("cifarfw sweep needs --plugin NAME (repeatable) or --grid plugin=A,B")
    ranges = {r.key: r for r in (plan.parse_range(item) for item in kw.get("range") or ())}
    for key, text in (file.get("range") or {}).items():
        ranges.setdefault(key.replace("-", "_"), plan.parse_range(f"{key}={text}", "sweep file range"))
    both = sorted(set(ranges) & set(grid))
    if both:
        raise UsageError(f"{both[0]} is in --grid and --range; give it once")
    search = pick("search")
    if search not in (None, "optuna"):
        raise UsageError(f"--search {search!r}: the only search is optuna")
    if ranges and not search:
        raise UsageError("--range needs --search optuna (a grid takes --grid KEY=V1,V2)")
    parallel = pick("parallel")
    if parallel is not None and (not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1):
        raise UsageError(f"--parallel must be a positive integer, got {parallel!r}")
    trials = pick("trials", 20)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise UsageError(f"--trials must be a positive integer, got {trials!r}")
    metric = pick("metric", "test_acc")
    if metric not in BY_NAME:
        raise UsageError(
            f"--metric: unknown metric {metric!r}{did_you_mean(metric, BY_NAME)} (known: {', '.join(BY_NAME)})"
        )
    direction = pick("direction") or ("maximize" if BY_NAME[metric].higher_is_better else "minimize")
    sampler, prune = pick("sampler", "tpe"), pick("prune", "none")
    if search is None:
        given = [
            f
            for f, v in (("--trials", kw.get("trials")), ("--prune", kw.get("prune")), ("--storage", kw.get("storage")))
            if v
        ]
        if given:
            raise UsageError(f"{', '.join(given)} go with --search optuna")
    name = plan.check_name(pick("name") or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")
    runs_root = str(Path(run_flags.pop("runs_root", None) or "runs").resolve())
    run_flags.pop("name", None)
    config_file = pick("config")
    executor = pick("executor", "local")
    if executor not in host.executors:
        known = ", ".join(sorted(host.executors))
        raise UsageError(f"unknown executor {executor!r}{did_you_mean(executor, host.executors)} (installed: {known})")
    request = Request(
        name=name,
        runs_root=runs_root,
        plugins=plugins,
        model=pick("model"),
        config_file=str(Path(config_file).resolve()) if config_file else None,
        flags=run_flags,
        grid=grid,
        ranges={k: [r.low, r.high, r.log] for k, r in ranges.items()},
        search=search,
        trials=trials,
        metric=metric,
        direction=direction,
        sampler=sampler,
        prune=prune,
        storage=pick("storage"),
        executor=executor,
        executor_options=_executor_options(host, executor, kw, file),
        parallel=parallel,
    )
    if search:
        from cifarfw_sweep.search import check_categorical

        check_categorical(request.space())
    return request


def _read_sweep_file(path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"sweep file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read sweep file {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"sweep file {path} is not valid TOML: {err}") from None


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _executor_options(host: PluginHost, executor: str, kw: dict[str, Any], file: dict[str, Any]) -> dict[str, Any]:
    """The chosen executor's option values (given or default); another executor's flags are refused."""
    chosen: dict[str, Any] = {}
    for name, spec in host.executors.items():
        for option in spec.options:
            value = kw.get(f"executor__{name}__{option.name}")
            if value is None:
                value = file.get(option.name)
            if name != executor and kw.get(f"executor__{name}__{option.name}") is not None:
                raise UsageError(f"--{option.name.replace('_', '-')} belongs to --executor {name}")
            if name == executor:
                chosen[option.name] = option.default if value is None else value
    return chosen


# --- planning and running ------------------------------------------------------------------------


def grid_jobs(host: PluginHost, request: Request) -> list[tuple[Job, config_mod.RunConfig]]:
    """Every combination x seed, each resolved as its run will be."""
    out = []
    for params in request.space().combinations():
        config = request.resolve(host, params)
        for seed in range(config.seed, config.seed + config.seeds):
            job = request.job(params, seed, len(out))
            out.append((job, dataclasses.replace(config, seed=seed, seeds=1)))
    return out


def check_search(host: PluginHost, request: Request) -> None:
    """Each plugin with each grid value and each range bound resolves (a search's runs are not known yet)."""
    space = request.space()
    plugins = space.grid.get("plugin", request.plugins)
    for plugin in plugins:
        base = {"plugin": plugin}
        config = request.resolve(host, base)
        if config.seeds > 1:
            raise UsageError("--seeds with --search: each trial is one run; drop --seeds")
        for key, values in space.grid.items():
            for value in values if key != "plugin" else ():
                request.resolve(host, {**base, key: value})
        for key, rng in space.ranges.items():
            request.resolve(host, {**base, key: rng.low})
            request.resolve(host, {**base, key: rng.high})


def make_executor(host: PluginHost, request: Request) -> Executor:
    options = {**request.executor_options, "parallel": request.parallel}
    return host.executors[request.executor].factory(options)


def main(host: PluginHost, kw: dict[str, Any], run_flags: dict[str, Any]) -> None:
    if kw.get("resume"):
        resume(host, kw, run_flags)
        return
    request = build_request(host, kw, run_flags)
    if request.search:
        check_search(host, request)
        if kw.get("dry_run"):
            _print_search_plan(request)
            return
    else:
        jobs = grid_jobs(host, request)
        if kw.get("dry_run"):
            for job, config in jobs:
                click.echo(f"# sweep {request.name}, run {job.index}: {plan.label(job.params)}, seed {job.seed}")
                click.echo(config_mod.to_toml(config))
            return
        if manifest.exists(request.runs_root, request.name):
            raise UsageError(
                f"sweep {request.name!r} exists under {request.runs_root}; continue it with "
                f"`cifarfw sweep --resume {request.name}` or choose another --name"
            )
    storage = _explicit_storage(request)
    executor = make_executor(host, request)
    try:
        if request.search:
            _run_search(request, executor, storage, joined=manifest.exists(request.runs_root, request.name))
        else:
            _save_request(request, [job for job, _ in jobs])
            _run_grid(request, executor, [job for job, _ in jobs])
    finally:
        executor.close()


def resume(host: PluginHost, kw: dict[str, Any], run_flags: dict[str, Any]) -> None:
    """``--resume NAME``: the sweep's own request; only what has not finished runs."""
    allowed = {"resume", "executor", "parallel", "runs_root"}
    given = [
        k for k, v in kw.items() if v not in (None, (), False) and k not in allowed and not k.startswith("executor__")
    ]
    given += [k for k in run_flags if k != "runs_root"]
    if given:
        flags = ", ".join(sorted({"--" + k.split("__")[0].replace("_", "-") for k in given}))
        raise UsageError(f"--resume continues a sweep with its own settings; drop {flags}")
    root = str(Path(run_flags.get("runs_root") or "runs").resolve())
    data = manifest.load(root, kw["resume"])
    request = Request(**data["request"])
    request.runs_root = root  # the same sweep, where it is now (a moved or remotely mounted root)
    if kw.get("executor"):
        request.executor = kw["executor"]
        request.executor_options = _executor_options(host, request.executor, kw, {})
    elif any(v is not None for k, v in kw.items() if k.startswith("executor__")):
        request.executor_options.update(_executor_options(host, request.executor, kw, {}))
    if request.executor not in host.executors:
        raise UsageError(f"the sweep ran on executor {request.executor!r}, which is not installed; pass --executor")
    if kw.get("parallel") is not None:
        if kw["parallel"] < 1:
            raise UsageError(f"--parallel must be a positive integer, got {kw['parallel']}")
        request.parallel = kw["parallel"]
    storage = _explicit_storage(request)
    executor = make_executor(host, request)
    try:
        if request.search:
            _run_search(request, executor, storage, joined=True)
        else:
            jobs = [_job_from(request, item) for item in data.get("jobs", [])]
            _run_grid(request, executor, jobs)
    finally:
        executor.close()


def _job_from(request: Request, item: dict[str, Any]) -> Job:
    job = Job(**item)
    if job.runs_root != request.runs_root:  # the root moved: point the job's arguments at it
        job.argv = [request.runs_root if a == job.runs_root else a for a in job.argv]
        job.argv = [
            a.replace(
                f"runs_root={plan.toml_literal(job.runs_root)}", f"runs_root={plan.toml_literal(request.runs_root)}"
            )
            for a in job.argv
        ]
        job.log = job.log.replace(job.runs_root, request.runs_root, 1)
        job.runs_root = request.runs_root
    return job


def _save_request(request: Request, jobs: list[Job]) -> None:
    def change(data: dict[str, Any]) -> None:
        data["request"] = asdict(request)
        data["mode"] = request.search or "grid"
        if jobs:
            data["jobs"] = [job.to_dict() for job in jobs]
            for job in jobs:
                data["runs"].setdefault(str(job.index), {"params": job.params, "seed": job.seed, "status": "pending"})

    manifest.update(request.runs_root, request.name, change)


class _Flight:
    """The runs in flight on an executor: submit up to its capacity, collect as they end."""

    def __init__(self, executor: Executor, request: Request, total: int) -> None:
        self.executor, self.request, self.total = executor, request, total
        self.futures: dict[Future[Outcome], Job] = {}
        self.ended = 0
        self.counts: dict[str, int] = {}

    @property
    def room(self) -> bool:
        return len(self.futures) < max(1, self.executor.capacity)

    def submit(self, job: Job) -> None:
        manifest.set_run(
            self.request.runs_root, self.request.name, job.index, params=job.params, seed=job.seed, status="started"
        )
        self.futures[self.executor.submit(job)] = job

    def collect(self) -> list[tuple[Job, Outcome]]:
        """Wait for at least one run to end; each is recorded in the manifest and shown."""
        done, _ = wait(list(self.futures), return_when=FIRST_COMPLETED)
        out = []
        for future in done:
            job = self.futures.pop(future)
            try:
                outcome = future.result()
            except Exception as err:  # the executor lost the job (e.g. Ray gave up retrying)
                outcome = Outcome(job.index, "failed", "", "", 1)
                click.echo(
                    f"warning: run {job.index} ({plan.label(job.params)}): {type(err).__name__}: {err}", err=True
                )
            self.ended += 1
            self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
            manifest.set_run(
                self.request.runs_root,
                self.request.name,
                job.index,
                run_id=outcome.run_id,
                status=outcome.status,
                node_id=outcome.node_id,
            )
            where = f" on {outcome.node_id}" if outcome.node_id else ""
            tail = "" if outcome.status in DONE else f" (log: {job.log})"
            click.echo(
                f"[{self.ended}/{self.total}] {outcome.status}: {plan.label(job.params)}, seed {job.seed}{where} -> {outcome.run_id or '-'}{tail}"
            )
            out.append((job, outcome))
        return out

    def interrupted(self) -> CifarfwError:
        for job in self.futures.values():
            manifest.set_run(self.request.runs_root, self.request.name, job.index, status="interrupted")
        from cifarfw.errors import RunInterrupted

        return RunInterrupted(
            f"sweep {self.request.name} interrupted; runs in progress stop at their next checkpoint; continue with "
            f"`cifarfw sweep --resume {self.request.name} --runs-root {self.request.runs_root}`",
            2,
        )


def _run_grid(request: Request, executor: Executor, jobs: list[Job]) -> None:
    state = manifest.load(request.runs_root, request.name)["runs"]
    todo = [job for job in jobs if state.get(str(job.index), {}).get("status") not in DONE]
    kept = len(jobs) - len(todo)
    click.echo(
        f"sweep {request.name}: {len(jobs)} runs ({kept} already done), {executor.capacity} at a time "
        f"on executor {request.executor}; runs root {request.runs_root}"
    )
    flight = _Flight(executor, request, len(todo))
    try:
        while todo or flight.futures:
            while todo and flight.room:
                flight.submit(todo.pop(0))
            flight.collect()
    except KeyboardInterrupt:
        raise flight.interrupted() from None
    _summary(request, flight.counts)


def _summary(request: Request, counts: dict[str, int], best: str = "") -> None:
    text = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to run"
    click.echo(f"sweep {request.name}: {text}{best}")
    root = "" if request.runs_root == str(Path("runs").resolve()) else f" --runs-root {request.runs_root}"
    click.echo(f"compare: cifarfw compare --sweep {request.name}{root}")
    failed = sum(n for status, n in counts.items() if status not in DONE)
    if failed:
        raise CifarfwError(
            f"{failed} run{'s' * (failed > 1)} of sweep {request.name} did not finish (logs under "
            f"{manifest.sweep_dir(request.runs_root, request.name) / 'logs'}); "
            f"`cifarfw sweep --resume {request.name}` runs them again"
        )


# --- search --------------------------------------------------------------------------------------


def _explicit_storage(request: Request) -> Any:
    """Open an explicit --storage before anything else: a bad URL must leave nothing written."""
    if not request.search or not request.storage:
        return None
    from cifarfw_sweep.search import open_storage

    return open_storage(request.storage)


def _print_search_plan(request: Request) -> None:
    space = request.space()
    click.echo(f"# sweep {request.name}: optuna search, {request.trials} trials, {request.direction} {request.metric}")
    for key, values in space.grid.items():
        click.echo(f"#   {key}: one of {', '.join(map(str, values))}")
    for key, rng in space.ranges.items():
        kind = "int" if rng.is_int else "float"
        click.echo(f"#   {key}: {kind} in [{rng.low}, {rng.high}]{' (log)' if rng.log else ''}")
    click.echo(
        f"#   sampler {request.sampler}, pruner {request.prune}, storage {request.storage or 'sqlite in the runs root'}"
    )


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_gone(owner: Any) -> bool:
    host, _, pid = str(owner).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's worker resumes its own trials
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def _run_search(request: Request, executor: Executor, storage: Any, joined: bool) -> None:
    import optuna

    from cifarfw import runs
    from cifarfw_sweep.search import default_storage, open_storage, open_study, suggest, trial_env

    url = request.storage or default_storage(request.runs_root)
    if storage is None:
        Path(request.runs_root, "sweeps").mkdir(parents=True, exist_ok=True)
        storage = open_storage(url)
    request_seed = request.flags.get("seed")
    study = open_study(storage, request.name, request.direction, request.sampler, request.prune, request_seed)
    _save_request(request, [])
    space = request.space()
    states = optuna.trial.TrialState
    flight = _Flight(executor, request, request.trials)
    resubmit = [
        t
        for t in study.get_trials(deepcopy=False, states=(states.RUNNING,))
        if t.user_attrs.get("cifarfw_runs_root") == request.runs_root and _owner_gone(t.user_attrs.get("cifarfw_owner"))
    ]
    if resubmit:
        click.echo(f"sweep {request.name}: resuming {len(resubmit)} trial(s) a killed sweep left running")
    click.echo(
        f"sweep {request.name}: optuna {'joins' if joined else 'creates'} study {request.name} ({url}), "
        f"{request.trials} trials in all, {executor.capacity} at a time on executor {request.executor}"
    )

    def job_of(trial_id: int, number: int, params: dict[str, Any]) -> Job:
        seed = int(request.flags.get("seed", 0) or 0)
        return request.job(params, seed, number, trial_env(url, request.name, trial_id, request.metric, request.prune))

    def tell(job: Job, outcome: Outcome) -> None:
        if outcome.status == "interrupted":
            return  # stays RUNNING: a resume continues it
        if outcome.status == "finished":
            entry = runs.load_entry(Path(request.runs_root) / outcome.run_id)
            value = runs.final_metrics(entry.record).get(request.metric)
            if isinstance(value, int | float) and math.isfinite(value):
                _tell(study, job.index, values=float(value))
                return
        _tell(study, job.index, state=states.PRUNED if outcome.status == "pruned" else states.FAIL)

    try:
        while True:
            while resubmit and flight.room:
                trial = resubmit.pop(0)
                study._storage.set_trial_user_attr(trial._trial_id, "cifarfw_owner", _owner())
                flight.submit(job_of(trial._trial_id, trial.number, trial.params))
            while not resubmit and flight.room and len(study.get_trials(deepcopy=False)) < request.trials:
                trial = study.ask()
                trial.set_user_attr("cifarfw_runs_root", request.runs_root)
                trial.set_user_attr("cifarfw_owner", _owner())
                params = suggest(trial, space)
                flight.submit(job_of(trial._trial_id, trial.number, params))
            if not flight.futures:
                break
            for job, outcome in flight.collect():
                tell(job, outcome)
    except KeyboardInterrupt:
        raise flight.interrupted() from None
    best = ""
    with contextlib.suppress(ValueError):  # no completed trial yet
        best = f"; best {request.metric} {BY_NAME[request.metric].format(study.best_value)} ({plan.label(study.best_params)})"
    _summary(request, flight.counts, best)


def _tell(study: Any, number: int, **kwargs: Any) -> None:
    """Tell the study how trial ``number`` ended; one already told (a resumed sweep) is left as it is."""
    try:
        study.tell(number, skip_if_finished=True, **kwargs)
    except (ValueError, RuntimeError) as err:
        click.echo(f"warning: trial {number}: {err}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `cifarfw sweep`")
