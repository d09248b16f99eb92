"""`run --suite S --only METHOD`: a new method's entries under the suite's exact settings,
ranked with the suite's committed trial files instead of re-running its baselines.

The new entries join the suite file's entries (after them, so that a random search draws
what a full run would draw) in a suite named `S+METHOD`: its MLflow experiment and its
results folder `results/S+METHOD/` hold the new trials; the committed `results/S/` is only
read. A new trial is the very trial a full run of the suite with the entry added would
make (same trial key), so the merged board is that full run's board. In a staged suite
(`stages.select`) the new entry follows the suite's stage rule: with `--search lr=a,b` it
picks its learning rate on the select seeds as every committed entry did; without, its
single configuration (the strategy's default lr) runs on every seed.

Before anything trains, the committed files must have been made under the settings the
new trials will run with: `fingerprint_of_files` and `fingerprint_here` describe
everything that defines a trial except its entry (strategy, options, searched values) and
the code commit: model, tasks, seeds, budget per stage, the precision as resolved on the
machine (`auto` is bf16 on one CPU, fp32 on the next) and each task's data (split sizes
and a digest of the test split's example ids and labels, which every trial file records
with its test predictions). The first difference is one refusing line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .suite import (RUN_ONLY_KEYS, Suite, entry_name, read_suite, validate_suite)
from .trial_files import read_trial_files


def new_entry_specs(strategies: list[str], options: dict[str, Any], search: dict[str, list],
                    entry: str | None) -> dict[str, dict[str, Any]]:
    """Suite entries for the strategies given with --only (each with the same --option and
    --search values), checked now so a bad option is one line about the option."""
    from strategies import canonical_options, get_strategy, option_names

    from ..trial.config import field_names

    if entry is not None and len(strategies) != 1:
        raise UserError("--entry names one new entry: give one --only strategy with it")
    train_fields = set(field_names()) - RUN_ONLY_KEYS
    specs = {}
    for strategy in strategies:
        canonical = canonical_options(strategy, options)
        get_strategy(strategy, canonical)  # unknown strategy or option, bad value: one line
        for key in search:
            if key not in option_names(strategy) | train_fields:
                raise UserError(f"--search {key}: not a training field or an option of "
                                f"{strategy!r} (options: {', '.join(sorted(option_names(strategy)))})")
        specs[entry or strategy] = {"strategy": strategy, "options": canonical,
                                    "search": canonical_options(strategy, search)}
    return specs


def suite_with_entries(suite: str, specs: dict[str, dict[str, Any]]) -> tuple[Suite, Suite]:
    """(the suite as its file defines it, the suite with the new entries added after its own,
    named `<suite>+<entries>`)."""
    raw, path = read_suite(suite)
    base = validate_suite(raw, path)
    taken = sorted(set(specs) & set(base.strategies))
    if taken:
        raise UserError(f"suite {base.name} already has an entry {taken[0]!r}: name yours with "
                        f"--entry (e.g. --entry {taken[0]}-mine)")
    extended = {**raw, "name": f"{base.name}+{'+'.join(specs)}",
                "strategies": {**(raw.get("strategies") or {}), **specs}}
    return base, validate_suite(extended, path)


def committed_files(folder: Path, new_entries: list[str]) -> list[dict[str, Any]]:
    """The committed trial files the new entries are ranked with."""
    files = read_trial_files(folder / "trials")
    if not files:
        raise UserError(f"no committed trial files under {folder / 'trials'}: run the suite "
                        "first, or give the folder that holds them with --against DIR")
    taken = sorted({entry_name(f["trial"]) for f in files} & set(new_entries))
    if taken:
        raise UserError(f"{folder} already holds entry {taken[0]!r}: name yours with --entry "
                        f"(e.g. --entry {taken[0]}-mine)")
    return files


# -- fingerprints: everything that defines a trial but its entry -------------------------------

def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _examples_digest(pairs: list[list]) -> str:
    """A digest of a split's (example id, label) pairs, in id order."""
    return hashlib.sha256(_text(sorted(pairs)).encode()).hexdigest()[:16]


def fingerprint_of_files(files: list[dict[str, Any]]) -> dict[str, Any]:
    """What the committed trial files were made under. Each part maps to the set of values
    the files record (as text): more than one value is itself a difference."""
    parts: dict[str, Any] = {"model": set(), "tasks": set(), "seeds": set(), "budget": {},
                             "precision": set(), "data": {}}
    for record in files:
        trial = record["trial"]
        parts["model"].add(str(trial["model"]))
        parts["tasks"].add(trial["task"])
        parts["seeds"].add(int(trial["seed"]))
        parts["budget"].setdefault(trial.get("stage") or "all", set()).add(_text(trial["budget"]))
        result = record.get("result")
        if not result:  # a failed trial: no precision or data recorded
            continue
        precision = record["run"].get("precision") or result.get("config", {}).get("precision")
        if precision:
            parts["precision"].add(precision)
        data = parts["data"].setdefault(trial["task"], {"sizes": set(), "test examples": set()})
        data["sizes"].add(_text(result.get("sizes")))
        predictions = result.get("test_predictions") or {}
        if predictions and set(predictions) != {"labels", "predicted"}:  # keyed by example id
            data["test examples"].add(_examples_digest(
                [[key, value["label"]] for key, value in predictions.items()]))
    return parts


def fingerprint_here(base: Suite, data_dir: str) -> dict[str, Any]:
    """What the suite's trials run under on this machine, with the corpora under data_dir."""
    import tasks

    from ..trial.config import resolve_device, resolve_precision
    from ..trial.data import subsample

    budget = base.budget
    budgets = {"all": {_text(budget)}}
    if base.select is not None:
        budgets = {"select": {_text(base.select["budget"])}, "final": {_text(budget)}}
    seeds = set(base.seeds) | set((base.select or {}).get("seeds", []))
    for spec in base.strategies.values():
        seeds |= set(spec.get("seeds", []))
    device = resolve_device(str(budget.get("device", "auto")))
    precision, _, _ = resolve_precision(str(budget.get("precision", "auto")), device,
                                        str(budget.get("deepspeed", "none")))
    data = {}
    for name in base.tasks:
        task = tasks.get_task(name)
        raw = task.load(data_dir)
        test = subsample(raw["test"], budget.get("test_limit"))
        sizes = {"train": len(subsample(raw["train"], budget.get("train_limit"))),
                 "validation": len(subsample(raw["validation"], budget.get("eval_limit"))),
                 "test": len(test)}
        data[name] = {"sizes": {_text(sizes)}, "test examples": {_examples_digest(
            [[str(i), int(label)] for i, label in zip(test[task.id_column], test["label"])])}}
    return {"model": {str(base.model)}, "tasks": set(base.tasks), "seeds": seeds,
            "budget": budgets, "precision": {precision}, "data": data}


def check_same_setup(committed: dict[str, Any], here: dict[str, Any], folder: Path,
                     suite: str) -> None:
    """One line on the first part that differs, naming both values; nothing when none does."""
    def refuse(what: str, there: Any, now: Any) -> None:
        raise UserError(f"the committed trial files in {folder} were made under a different "
                        f"{what} than suite {suite} runs here ({_show(there)} there, "
                        f"{_show(now)} here): ranking them together would compare setups, "
                        "not methods; rerun the suite, or compare under its settings")

    for part in ("model", "tasks", "seeds"):
        if committed[part] != here[part]:
            refuse(part if part != "tasks" else "task set", committed[part], here[part])
    # Subset: a staged suite whose stage select covered every seed has no stage-final file.
    if not set(committed["budget"]) <= set(here["budget"]):
        refuse("stage layout", set(committed["budget"]), set(here["budget"]))
    for stage, budgets in committed["budget"].items():
        if budgets != here["budget"][stage]:
            where = "budget" if stage == "all" else f"budget of stage {stage}"
            refuse(where, *_budget_difference(budgets, here["budget"][stage]))
    if committed["precision"] and committed["precision"] != here["precision"]:
        from ..trial.config import cpu_computes_bf16

        why = "" if cpu_computes_bf16() else "; this CPU has no AVX512-BF16 or AMX"
        refuse("precision (as resolved" + why + ")", committed["precision"], here["precision"])
    for task, data in committed["data"].items():
        now = here["data"].get(task)
        if now is None:
            continue  # a task set difference, caught above
        if data["sizes"] != now["sizes"]:
            refuse(f"{task} data (split sizes)", data["sizes"], now["sizes"])
        if data["test examples"] and data["test examples"] != now["test examples"]:
            refuse(f"{task} data (test example ids and labels, digest)", data["test examples"],
                   now["test examples"])


def _budget_difference(there: set[str], now: set[str]) -> tuple[Any, Any]:
    """Only the budget keys that differ, when each side has one budget."""
    if len(there) != 1 or len(now) != 1:
        return there, now
    a, b = json.loads(next(iter(there))), json.loads(next(iter(now)))
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ({k: a.get(k) for k in keys}, {k: b.get(k) for k in keys})


def _show(value: Any) -> str:
    if isinstance(value, set):
        items = sorted(value, key=str)
        return items[0] if len(items) == 1 and isinstance(items[0], str) else ", ".join(map(str, items))
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def fingerprint_record(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint as JSON (sets as sorted lists), written beside the new trial files."""
    def plain(value):
        if isinstance(value, set):
            return sorted(value, key=str)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(fingerprint)
