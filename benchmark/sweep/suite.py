"""Suites: YAML files that name a model, tasks, strategies, seeds, search spaces, a budget
and resources. Validated on load; `expand_trials` turns one into concrete trial configs.

    name: smoke
    description: ...
    model: tiny-llama
    tasks: [iterater, argrewrite]
    seeds: [0]
    budget: {max_steps: 20, eval_every: 10, batch_size: 8}   # any TrainConfig field
    strategies:
      ir-tuning:
        options: {split_num: 1}                 # fixed strategy options
      lora-dora:                                # an entry of its own: a strategy, other options
        strategy: lora
        options: {adapter: dora}
        search: {lr: [5.0e-4, 1.0e-3]}          # grid values, or {loguniform: [a, b]}, ...
        seeds: [0]                              # the entry's own seeds (default: the suite's)
        tasks: [iterater]                       # the entry's own tasks (default: the suite's)
    focus: ir-tuning                            # the strategy the report looks into
    search: {algorithm: grid}                   # grid | random | optuna, num_samples, seed
    scheduler: null                             # or {type: asha, grace_period: 2}
    resources: {cpus_per_trial: 1, gpus_per_trial: 0, max_concurrent_trials: 2, max_retries: 1,
                reuse_workers: false}           # true: trials share worker processes (below)
    distributed: {workers: 2, cpus_per_worker: 1, gpus_per_worker: 1, deepspeed: zero2}
    stages: {select: {seeds: [0], budget: {max_steps: 150}}}

`stages` (optional) splits a run in two. Stage `select` runs every strategy's search
(e.g. its learning-rate candidates) on its own seeds and budget (merged over the suite's);
then stage `final` runs, per task and strategy, the configuration with the best mean dev
macro F1 of stage one, on every seed at the full budget. Where stage one ran at the full
budget, its runs of the chosen configuration count for their seeds and are not run again.
Both stages go to MLflow (param `stage`), a re-run resumes either, and the leaderboard
ranks the chosen configuration over every seed and shows what stage one chose from.
Without `stages`, every point of the search runs on every seed.
`stages.select.scheduler: {asha: {metric: curve_macro_f1, grace_period: 0.25,
reduction_factor: 2}}` lets Ray Tune's ASHA cut stage select's bad configurations early,
per task and entry, on the learning curve the trials report as they train (grace_period
and the rungs are shares of each trial's budget); a cut trial's file says "stopped early"
(status KILLED) and it is never a candidate nor a final result. Stage final never stops
early. Trials run seed-major (every entry's seed 0, then seed 1, ...), in both stages.
`pin_training_code: true` refuses to add trials to trial files trained under another
digest of the training code (benchmark/trial/, strategies/, tasks/; `run --allow-mixed-code`).

`resources.reuse_workers: true` runs a worker process's next trial in the same process
(Ray Tune's `reuse_actors`): the libraries are imported once per worker, not once per trial
(a 6-step trial of the tiny model costs ~10 s of imports and ~2 s of work), but a trial's
peak RSS then includes what earlier trials in its process left, so each trial file says how
many ran there before it (`result.process.trials_before`) and the board says so. For test
and smoke suites; the default, false, gives every trial a fresh process.

`distributed` (optional) makes every trial data-parallel: a Ray Train TorchTrainer with
`workers` workers inside the Tune trial, each with its own resources, optionally under
DeepSpeed ZeRO (`none`, `zero2`, `zero3`). `budget.batch_size` stays the global batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.paths import absolute, looks_like_path
from ..trial.models import DEFAULT_MODEL

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
TOP_KEYS = {"name", "description", "model", "tasks", "seeds", "budget", "strategies",
            "search", "scheduler", "resources", "distributed", "notes", "focus", "stages",
            "pin_training_code", "statistics"}
STAGE_KEYS = {"select"}
SELECT_KEYS = {"seeds", "budget", "scheduler"}
# Stage select's early stopping: Ray Tune's ASHA per task and entry, on the metric trials
# report as they train, at shares of each trial's budget (tune_runner.GroupedASHA).
SELECT_SCHEDULERS = {"asha"}
SELECT_ASHA_KEYS = {"metric", "grace_period", "reduction_factor"}
SELECT_METRICS = {"curve_macro_f1", "dev_macro_f1"}
STRATEGY_KEYS = {"strategy", "options", "search", "seeds", "tasks"}
SEARCH_KEYS = {"algorithm", "num_samples", "seed"}
SCHEDULER_KEYS = {"type", "grace_period", "reduction_factor"}
RESOURCE_KEYS = {"cpus_per_trial", "gpus_per_trial", "max_concurrent_trials", "max_retries",
                 "reuse_workers"}
DISTRIBUTED_KEYS = {"workers", "cpus_per_worker", "gpus_per_worker", "deepspeed"}
DISTRIBUTIONS = {"uniform", "loguniform", "choice", "randint", "grid"}
# Trial fields that are not a TrainConfig field or a strategy option.
RUN_ONLY_KEYS = {"task", "strategy", "seed", "model"}


@dataclasses.dataclass(frozen=True)
class WorkerResources:
    """Ray Train workers of one data-parallel trial."""
    workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0

    def __post_init__(self):
        if self.workers < 1:
            raise UserError("workers must be at least 1")
        if self.workers > 1 and 0 < self.gpus_per_worker < 1:
            # Ray Train + NCCL on a shared GPU fails ("Duplicate GPU detected").
            raise UserError("fractional GPUs suit single-process trials only: with several "
                            "workers give each worker whole GPUs (gpus_per_worker >= 1)")


@dataclasses.dataclass
class Suite:
    name: str
    description: str
    model: str
    tasks: list[str]
    seeds: list[int]
    budget: dict[str, Any]
    # entry name -> {"strategy": registered name, "options": {...}, "search": {...}}
    strategies: dict[str, dict[str, Any]]
    search: dict[str, Any]
    scheduler: dict[str, Any] | None
    resources: dict[str, Any]
    path: Path
    distributed: dict[str, Any] | None = None  # workers, cpus/gpus_per_worker, deepspeed
    focus: str | None = None  # the strategy whose selection and paired tests the report shows
    # stage one: {"seeds": [...], "budget": {...}, "scheduler": {...} or None}
    select: dict[str, Any] | None = None
    # Refuse to add trials to trial files trained under another training-code digest
    # (resume.check_training_code); `run --allow-mixed-code` overrides.
    pin_training_code: bool = False
    # How the claims card tests gaps: "paired-bootstrap" (the leaderboard's rule) or
    # "hierarchical" (reporting/verdicts.py: seeds and examples resampled, Holm, 20 draws).
    statistics: str = "paired-bootstrap"

    @property
    def worker_resources(self) -> "WorkerResources | None":
        """Ray Train workers per trial, or None for single-process trials."""
        if not self.distributed:
            return None
        return WorkerResources(int(self.distributed.get("workers", 1)),
                               float(self.distributed.get("cpus_per_worker", 1)),
                               float(self.distributed.get("gpus_per_worker", 0)))

    @property
    def algorithm(self) -> str:
        return self.search.get("algorithm", "grid")


def list_suites() -> dict[str, str]:
    out = {}
    for path in sorted(SUITES_DIR.glob("*.yaml")):
        try:
            out[path.stem] = load_suite(str(path)).description
        except UserError as error:
            out[path.stem] = f"(invalid: {error})"
    return out


def suite_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"suite file {path} does not exist")
        return path
    shipped = SUITES_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        known = ", ".join(p.stem for p in sorted(SUITES_DIR.glob("*.yaml")))
        raise UserError(f"unknown suite {name_or_path!r}; shipped suites: {known} (or give a YAML path)")
    return shipped


def load_suite(name_or_path: str) -> Suite:
    return validate_suite(*read_suite(name_or_path))


def read_suite(name_or_path: str) -> tuple[dict, Path]:
    """A suite file's mapping as written (not validated) and its path."""
    import yaml

    path = suite_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise UserError(f"{path}: malformed YAML{at}: {getattr(error, 'problem', error)}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a suite must be a YAML mapping")
    return raw, path


def validate_suite(raw: dict, path: Path) -> Suite:
    """A suite from its mapping (e.g. a suite file's, with entries added), checked."""
    return _validate(raw, path)


def _check_keys(path: Path, where: str, values: dict, allowed: set[str]) -> None:
    if not isinstance(values, dict):
        raise UserError(f"{path}: {where} must be a mapping")
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r} in {where}; allowed: {', '.join(sorted(allowed))}")


def _validate(raw: dict, path: Path) -> Suite:
    import tasks
    from strategies import STRATEGIES, canonical_options, option_names

    from ..trial.backends import DEEPSPEED_CHOICES
    from ..trial.config import field_names

    _check_keys(path, "the suite", raw, TOP_KEYS)
    for key in ("name", "tasks", "strategies"):
        if key not in raw:
            raise UserError(f"{path}: missing key {key!r}")
    train_fields = set(field_names()) - RUN_ONLY_KEYS
    budget = raw.get("budget") or {}
    _check_keys(path, "budget", budget, train_fields)
    for task in raw["tasks"]:
        if task not in tasks.TASKS:
            raise UserError(f"{path}: {tasks.TASKS.unknown_message(task)} (in tasks)")
    strategies = {}
    for entry, spec in (raw["strategies"] or {}).items():
        spec = spec or {}
        _check_keys(path, f"strategies.{entry}", spec, STRATEGY_KEYS)
        name = str(spec.get("strategy", entry))  # an entry may rename a strategy
        if name not in STRATEGIES:
            raise UserError(f"{path}: {STRATEGIES.unknown_message(name)} (in strategies)")
        options = spec.get("options") or {}
        search = spec.get("search") or {}
        _check_keys(path, f"strategies.{entry}.options", options, option_names(name))
        _check_keys(path, f"strategies.{entry}.search", search, option_names(name) | train_fields)
        for key, space in search.items():
            _check_space(path, f"strategies.{entry}.search.{key}", space)
        # Old option names (e.g. lora's r, alpha) load under their current names.
        strategies[entry] = {"strategy": name,
                             "options": _canonical(path, name, options, canonical_options),
                             "search": _canonical(path, name, search, canonical_options)}
        if spec.get("seeds") is not None:  # e.g. a one-seed side experiment beside the suite
            if not isinstance(spec["seeds"], list) or not spec["seeds"]:
                raise UserError(f"{path}: strategies.{entry}.seeds must be a non-empty list")
            strategies[entry]["seeds"] = [int(s) for s in spec["seeds"]]
        if spec.get("tasks") is not None:  # e.g. the second corpus for some entries only
            if (not isinstance(spec["tasks"], list) or not spec["tasks"]
                    or any(t not in raw["tasks"] for t in spec["tasks"])):
                raise UserError(f"{path}: strategies.{entry}.tasks must be a non-empty list of "
                                f"the suite's tasks ({', '.join(map(str, raw['tasks']))})")
            strategies[entry]["tasks"] = list(spec["tasks"])
    search = raw.get("search") or {}
    _check_keys(path, "search", search, SEARCH_KEYS)
    if search.get("algorithm", "grid") not in ("grid", "random", "optuna"):
        raise UserError(f"{path}: search.algorithm must be grid, random or optuna")
    scheduler = raw.get("scheduler")
    if scheduler is not None:
        _check_keys(path, "scheduler", scheduler, SCHEDULER_KEYS)
        if scheduler.get("type") != "asha":
            raise UserError(f"{path}: scheduler.type must be 'asha' (or leave scheduler out)")
    resources = raw.get("resources") or {}
    _check_keys(path, "resources", resources, RESOURCE_KEYS)
    retries = resources.get("max_retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise UserError(f"{path}: resources.max_retries (runs again of a trial whose process "
                        f"died) must be a whole number from 0, got {retries!r}")
    if not isinstance(resources.get("reuse_workers", False), bool):
        raise UserError(f"{path}: resources.reuse_workers must be true or false, "
                        f"got {resources['reuse_workers']!r}")
    distributed = raw.get("distributed")
    if distributed is not None:
        _check_keys(path, "distributed", distributed, DISTRIBUTED_KEYS)
        if "deepspeed" in budget:
            raise UserError(f"{path}: give deepspeed in distributed, not in budget")
        if distributed.get("deepspeed", "none") not in DEEPSPEED_CHOICES:
            raise UserError(f"{path}: distributed.deepspeed must be none, zero2 or zero3")
        # The ZeRO stage changes what a trial computes: it is part of every trial's config.
        budget = {**budget, "deepspeed": distributed.get("deepspeed", "none")}
    select = None
    if raw.get("stages") is not None:
        _check_keys(path, "stages", raw["stages"], STAGE_KEYS)
        select = raw["stages"].get("select") or {}
        _check_keys(path, "stages.select", select, SELECT_KEYS)
        _check_keys(path, "stages.select.budget", select.get("budget") or {}, train_fields)
        if (search.get("algorithm", "grid")) == "optuna" or scheduler is not None:
            raise UserError(f"{path}: stages run grid or random search without a scheduler "
                            "(stage select takes its own: stages.select.scheduler)")
        select = {"seeds": [int(s) for s in select.get("seeds", [0])],
                  "budget": {**budget, **(select.get("budget") or {})},
                  "scheduler": _select_scheduler(path, select.get("scheduler"))}
        if select["scheduler"]:
            if distributed is not None:
                raise UserError(f"{path}: stages.select.scheduler needs single-process trials "
                                "(data-parallel trials do not report their learning curve)")
            if (select["scheduler"]["metric"] == "curve_macro_f1"
                    and not select["budget"].get("curve_every")):
                raise UserError(f"{path}: stages.select.scheduler cuts on curve_macro_f1, but "
                                "the select budget records no learning curve: set curve_every")
    pin = raw.get("pin_training_code", False)
    if not isinstance(pin, bool):
        raise UserError(f"{path}: pin_training_code must be true or false, got {pin!r}")
    statistics = raw.get("statistics", "paired-bootstrap")
    if statistics not in ("paired-bootstrap", "hierarchical"):
        raise UserError(f"{path}: statistics must be paired-bootstrap or hierarchical, "
                        f"got {statistics!r}")
    focus = raw.get("focus")
    if focus is not None and focus not in strategies:
        raise UserError(f"{path}: focus {focus!r} is not one of the suite's strategies "
                        f"({', '.join(strategies)})")
    model = str(raw.get("model", DEFAULT_MODEL))
    if looks_like_path(model):  # a local folder: resolved here, before trials run elsewhere
        model = absolute(model)
    suite = Suite(name=str(raw["name"]), description=str(raw.get("description", "")),
                  model=model, tasks=list(raw["tasks"]),
                  seeds=[int(s) for s in raw.get("seeds", [0])], budget=budget,
                  strategies=strategies, search=search, scheduler=scheduler,
                  resources={"cpus_per_trial": 1, "gpus_per_trial": 0, **resources}, path=path,
                  distributed=distributed, focus=focus, select=select, pin_training_code=pin,
                  statistics=statistics)
    try:
        suite.worker_resources  # bad worker counts or fractional GPUs per worker
        expand_trials(suite)  # every option and value must make a valid trial
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    return suite


def _select_scheduler(path: Path, spec: Any) -> dict[str, Any] | None:
    """Stage select's scheduler, `{asha: {metric, grace_period, reduction_factor}}`, as
    {"type": "asha", "metric", "grace_period", "reduction_factor"}; grace_period is a share
    of each trial's budget (0.25: no cut before a quarter of its steps)."""
    if spec is None:
        return None
    where = "stages.select.scheduler"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SELECT_SCHEDULERS:
        raise UserError(f"{path}: {where} must be {{asha: {{metric: curve_macro_f1, "
                        "grace_period: 0.25, reduction_factor: 2}}")
    (kind, values), = spec.items()
    values = values or {}
    _check_keys(path, f"{where}.{kind}", values, SELECT_ASHA_KEYS)
    metric = values.get("metric", "curve_macro_f1")
    if metric not in SELECT_METRICS:
        raise UserError(f"{path}: {where}.{kind}.metric must be one of "
                        f"{', '.join(sorted(SELECT_METRICS))}, got {metric!r}")
    grace, factor = values.get("grace_period", 0.25), values.get("reduction_factor", 2)
    if not isinstance(grace, (int, float)) or isinstance(grace, bool) or not 0 < grace < 1:
        raise UserError(f"{path}: {where}.{kind}.grace_period is a share of each trial's "
                        f"budget, above 0 and below 1, got {grace!r}")
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 1:
        raise UserError(f"{path}: {where}.{kind}.reduction_factor must be above 1, got {factor!r}")
    return {"type": kind, "metric": metric, "grace_period": float(grace),
            "reduction_factor": float(factor)}


def _canonical(path: Path, strategy: str, values: dict, canonical_options) -> dict:
    """Strategy option names made current; training fields (e.g. lr) pass unchanged."""
    try:
        return canonical_options(strategy, values)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def _check_space(path: Path, where: str, space: Any) -> None:
    if isinstance(space, list):
        if not space:
            raise UserError(f"{path}: {where} is an empty list")
        return
    if isinstance(space, dict) and len(space) == 1 and next(iter(space)) in DISTRIBUTIONS:
        return
    raise UserError(f"{path}: {where} must be a list of values or one of "
                    f"{{{', '.join(sorted(DISTRIBUTIONS))}: ...}}")


def tune_domain(space: Any):
    """A Ray Tune search domain for one suite search entry."""
    from ray import tune

    if isinstance(space, list):
        return tune.grid_search(space)
    (kind, args), = space.items()
    if kind == "grid":
        return tune.grid_search(list(args))
    if kind == "choice":
        return tune.choice(list(args))
    return {"uniform": tune.uniform, "loguniform": tune.loguniform,
            "randint": tune.randint}[kind](*args)


def trial_key(trial: dict[str, Any]) -> str:
    """Stable identity of a trial's configuration: a re-run finds its finished result. The
    stage is not part of it: a stage-select trial at the full budget is the stage-final
    trial of its seed, run once."""
    identity = {k: v for k, v in trial.items() if k != "stage"}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_key(trial: dict[str, Any]) -> str:
    """Identity of a hyperparameter configuration across seeds (leaderboard grouping)."""
    return trial_key({k: v for k, v in trial.items() if k != "seed"})


def entry_name(trial: dict[str, Any]) -> str:
    """The suite entry a trial belongs to: its strategy's name unless the entry renames it."""
    return trial.get("entry", trial["strategy"])


def trial_label(trial: dict[str, Any]) -> str:
    """How progress lines name a trial: task/entry/seed, then its searched values."""
    searched = " ".join(f"{k}={v}" for k, v in sorted(trial.get("hyperparameters", {}).items()))
    return f"{trial['task']}/{entry_name(trial)}/s{trial['seed']}" + (f" {searched}" if searched else "")


def split_hyperparameters(strategy: str, values: dict[str, Any]) -> tuple[dict, dict]:
    """(TrainConfig overrides, strategy options) from a flat dict of searched values."""
    from strategies import strategy_options

    options = set(strategy_options(strategy))
    return ({k: v for k, v in values.items() if k not in options},
            {k: v for k, v in values.items() if k in options})


def expand_trials(suite: Suite) -> list[dict[str, Any]]:
    """Concrete trials for grid and random search (Optuna suggests its own values); for a
    suite with stages, the trials of stage `select` (`final_trials` makes the rest).

    A trial is {"task", "strategy", "seed", "model", "budget": {...}, "hyperparameters": {...},
    "options": {...}} (plus "stage" in a staged suite): `budget` is the suite's,
    `hyperparameters` the searched TrainConfig fields, `options` the strategy's.
    Random search draws `num_samples` configurations per strategy with Ray Tune's own
    distributions from a seeded generator, so a re-run draws the same ones.
    """
    seeds, budget = suite.seeds, suite.budget
    if suite.select is not None:
        seeds, budget = suite.select["seeds"], suite.select["budget"]
    import numpy as np

    from strategies import get_strategy

    from ..trial.backends import check_zero_support
    from ..trial.config import TrainConfig

    trials = []
    rng = np.random.default_rng(suite.search.get("seed", 0))
    for entry, spec in suite.strategies.items():
        strategy = spec["strategy"]
        points = _search_points(spec["search"], suite.algorithm,
                                int(suite.search.get("num_samples", 1)), rng)
        for point in points:
            hyper, options = split_hyperparameters(strategy, point)
            options = {**spec["options"], **options}
            # Bad option values, and settings ZeRO cannot honour, fail at load time.
            try:
                check_zero_support(suite.budget.get("deepspeed", "none"), get_strategy(strategy, options))
            except UserError as error:
                raise UserError(f"strategies.{entry}: {error}") from None
            TrainConfig.from_dict({**budget, **hyper})  # and bad training values
            for task in spec.get("tasks", suite.tasks):
                for seed in _entry_seeds(spec, seeds):
                    trial = {"task": task, "strategy": strategy, "seed": seed,
                             "model": suite.model, "budget": budget,
                             "hyperparameters": hyper, "options": options}
                    if entry != strategy:
                        trial["entry"] = entry
                    if suite.select is not None:
                        trial["stage"] = "select"
                    trials.append(trial)
    return seed_major(trials)


def seed_major(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials in the order Tune starts them: every entry's seed 0, then seed 1, ... (stable
    within a seed), so a sitting cut short leaves every strategy with the same seeds done."""
    return sorted(trials, key=lambda t: t["seed"])


def final_trials(suite: Suite, selected: list[dict[str, Any]],
                 dev_f1: dict[str, float]) -> tuple[list[dict[str, Any]], dict]:
    """Stage `final` of a staged suite: per task and strategy, the stage-one configuration
    with the best mean dev macro F1 over its seeds (`dev_f1`: trial key -> dev F1 of the
    finished stage-one trials; ties go to the one listed first), on every seed at the full
    budget. Returns the trials and, per (task, strategy), the candidates' mean dev F1."""
    import statistics

    scores: dict[tuple[str, str], dict[str, list]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for trial in selected:
        key = trial_key(trial)
        if key not in dev_f1:
            continue  # failed: not a candidate
        config = config_key(trial)
        configs[config] = trial
        scores.setdefault((trial["task"], entry_name(trial)), {}).setdefault(config, []).append(
            dev_f1[key])
    trials, candidates = [], {}
    for (task, strategy), by_config in scores.items():
        means = {c: statistics.fmean(v) for c, v in by_config.items()}
        best = max(means, key=means.get)  # first of the maxima: dicts keep listing order
        candidates[(task, strategy)] = {c: (configs[c]["hyperparameters"], configs[c]["options"],
                                            m) for c, m in means.items()}
        chosen = configs[best]
        for seed in _entry_seeds(suite.strategies[strategy], suite.seeds):
            trial = {"task": task, "strategy": chosen["strategy"], "seed": seed,
                     "model": suite.model, "budget": suite.budget,
                     "hyperparameters": chosen["hyperparameters"], "options": chosen["options"],
                     "stage": "final"}
            if "entry" in chosen:
                trial["entry"] = chosen["entry"]
            trials.append(trial)
    return seed_major(trials), candidates


def _entry_seeds(spec: dict[str, Any], seeds: list[int]) -> list[int]:
    """An entry's own seeds, where it names them, in place of the suite's (or the stage's)."""
    if "seeds" not in spec:
        return seeds
    return [s for s in spec["seeds"] if s in seeds] or spec["seeds"][:1]


def _search_points(search: dict[str, Any], algorithm: str, num_samples: int, rng) -> list[dict]:
    """Ray Tune's variant semantics: lists are grid axes; each distribution is sampled
    `num_samples` times per grid point (random search only)."""
    if not search or algorithm == "optuna":
        return [{}]  # Optuna suggests its values inside the run
    grid_keys = [k for k, v in search.items() if isinstance(v, list) or "grid" in v]
    sampled_keys = [k for k in search if k not in grid_keys]
    if sampled_keys and algorithm == "grid":
        raise UserError(f"search key {sampled_keys[0]!r} is a distribution: use "
                        "search.algorithm random or optuna, or give a list of values")
    grid_values = [search[k] if isinstance(search[k], list) else search[k]["grid"]
                   for k in grid_keys]
    points = []
    for combo in itertools.product(*grid_values):
        for _ in range(num_samples if sampled_keys else 1):
            point = dict(zip(grid_keys, combo))
            for key in sampled_keys:
                value = tune_domain(search[key]).sample(random_state=rng)
                point[key] = value.item() if hasattr(value, "item") else value
            points.append(point)
    return points


def train_config(trial: dict[str, Any], data_dir: str | None = None):
    """The TrainConfig of one concrete trial. Kernel choices the suite does not pin are the
    legacy ones, the code path its committed trial files ran (benchmark/trial/kernels.py)."""
    from ..trial.config import TrainConfig
    from ..trial.kernels import LEGACY_KERNELS

    return TrainConfig.from_dict({**LEGACY_KERNELS, **trial["budget"], **trial["hyperparameters"],
                                  "task": trial["task"], "strategy": trial["strategy"],
                                  "strategy_options": trial["options"], "model": trial["model"],
                                  "seed": trial["seed"], "data_dir": data_dir})
