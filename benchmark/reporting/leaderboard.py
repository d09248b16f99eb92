"""Leaderboards: per task, each strategy's best hyperparameters by mean dev macro F1,
then its test macro F1 mean ± std over seeds and its costs. Made from run records
(`runs.py`: MLflow or committed trial files); Markdown to the terminal and
`results/<suite>/leaderboard.md`, an HTML page with plots beside it."""

from __future__ import annotations

import html
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import convergence
from .runs import NEW_MARK_NOTE, RunRecord, RunSource
from .selection import selection_lines


@dataclass
class Entry:
    """One strategy on one task: its dev-selected configuration over seeds."""
    task: str
    strategy: str
    config: dict[str, str]
    runs: list = field(default_factory=list)  # FINISHED runs of the chosen configuration
    failed: list = field(default_factory=list)  # FAILED runs of this strategy on this task
    configs_tried: int = 0
    # A staged suite's stage one: (configuration, mean dev macro F1, seeds) per candidate.
    candidates: list[tuple[dict[str, str], float, int]] = field(default_factory=list)
    # ... and the configurations its scheduler cut early: (configuration, step cut at).
    cut: list[tuple[dict[str, str], str]] = field(default_factory=list)

    def metric(self, name: str) -> list[float]:
        return [r.metrics[name] for r in self.runs if name in r.metrics]

    def mean(self, name: str) -> float | None:
        values = self.metric(name)
        return statistics.fmean(values) if values else None

    def std(self, name: str) -> float:
        values = self.metric(name)
        return statistics.stdev(values) if len(values) > 1 else 0.0


def collect(records: list[RunRecord]) -> dict[str, list[Entry]]:
    """task -> entries ranked by test macro F1 (mean over seeds), failed-only last."""
    by_strategy: dict[tuple[str, str], list[RunRecord]] = {}
    # One order whatever the source (MLflow lists newest first, trial files by name), so
    # ties and the text of each cell are the same from both.
    records = sorted(records, key=lambda r: (r.params.get("stage", ""),
                                             r.tags.get("config_key", ""), int(r.seed)))
    for run in records:
        if run.task and run.strategy:
            by_strategy.setdefault((run.task, run.strategy), []).append(run)
    board: dict[str, list[Entry]] = {}
    for (task, strategy), group in sorted(by_strategy.items()):
        selection = [r for r in group if r.params.get("stage") == "select"]
        # A staged suite ranks the configuration its stage final ran (with the stage-one
        # runs of that configuration, when stage one ran at the full budget).
        final = {r.tags.get("config_key") for r in group if r.params.get("stage") == "final"}
        ranked = [r for r in group if not selection or r.tags.get("config_key") in final]
        finished = [r for r in ranked if r.status == "FINISHED"]
        failed = [r for r in ranked if r.status == "FAILED"]
        if not finished and not failed:  # a staged entry that never reached stage final
            failed = [r for r in selection if r.status == "FAILED"]
        configs = _by_config(finished)
        entry = Entry(task, strategy, {}, failed=failed, configs_tried=len(configs))
        if configs:
            best = max(configs.values(), key=_mean_dev)
            entry.runs = sorted(best, key=lambda r: int(r.seed))
            entry.config = _hyperparameters(best[0].params)
        entry.candidates = sorted(
            ((_hyperparameters(runs[0].params), _mean_dev(runs), len(runs))
             for runs in _by_config([r for r in selection if r.status == "FINISHED"]).values()),
            key=lambda c: _hyper_text(c[0]))
        entry.cut = sorted(((_hyperparameters(r.params), r.tags.get("stopped_early", "?"))
                            for r in selection if r.status == "KILLED"),
                           key=lambda c: _hyper_text(c[0]))
        board.setdefault(task, []).append(entry)
    for entries in board.values():
        entries.sort(key=lambda e: (e.mean("test_macro_f1") is None, -(e.mean("test_macro_f1") or 0)))
    return board


def _memory_cell(entry: Entry, tensors: bool) -> str:
    rss = _fmt(entry.mean("peak_memory_mb"), 0)
    return f"{_fmt(entry.mean('tensor_peak_mb'), 0)} / {rss}" if tensors else rss


def _selection_wording(board: dict[str, list[Entry]]) -> str:
    """What the board's choices were made from, as they were made: a search or one
    configuration, a best dev step or the one evaluation there was."""
    entries = [e for es in board.values() for e in es if e.runs]
    searched = any(e.configs_tried > 1 or len(e.candidates) + len(e.cut) > 1 for e in entries)
    evaluations = {len(r.result().get("history") or []) for e in entries for r in e.runs}
    cut = any(e.cut for e in entries)
    chosen = ("each strategy's hyperparameters are the ones with the best mean dev macro F1"
              + (" (configurations the scheduler cut early are never chosen)" if cut else "")
              if searched else "each strategy ran one configuration (no search)")
    if evaluations and max(evaluations) <= 1:
        tested = "test figures are at each run's one dev evaluation, the end of training"
    else:
        tested = "test figures are at each run's best dev step"
    return f"{chosen}; {tested}"


def _by_config(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    configs: dict[str, list] = {}
    for r in runs:
        configs.setdefault(r.tags.get("config_key", ""), []).append(r)
    return configs


def _mean_dev(runs: list[RunRecord]) -> float:
    return statistics.fmean(r.metrics.get("dev_best_macro_f1", 0.0) for r in runs)


def _hyperparameters(params: dict[str, str]) -> dict[str, str]:
    """The searched values (hp.*, opt.*) of a run, and its learning rate when not searched."""
    config = {k: v for k, v in params.items() if k.startswith(("hp.", "opt."))}
    if "hp.lr" not in params and "config.lr" in params:  # the strategy's default lr
        config["config.lr"] = params["config.lr"]
    return config


def _hyper_text(config: dict[str, str]) -> str:
    return ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in sorted(config.items())) or "defaults"


def majority_f1(entries: list[Entry]) -> float | None:
    """The test macro F1 of predicting the train split's majority label (recorded by every
    trial since it was added)."""
    values = [v for e in entries for v in e.metric("majority_test_macro_f1")]
    return values[0] if values else None


def seed_predictions(entry: Entry) -> dict[str, dict]:
    """seed -> {"by_id": {example id: (label, predicted)}, "classes"} of the entry's runs that
    saved test predictions (runs from before predictions were kept have none)."""
    by_seed = {}
    for r in entry.runs:
        saved = r.result()
        if saved.get("test_predictions"):
            by_seed[r.seed] = {"by_id": _by_id(saved["test_predictions"]),
                               "classes": len(saved["label_names"])}
    return by_seed


def _by_id(predictions: dict) -> dict[str, tuple[int, int]]:
    """{example id: (label, predicted)}; results written before predictions were keyed by
    id hold two lists in evaluation order, keyed here by position."""
    if set(predictions) == {"labels", "predicted"}:
        return {str(i): pair for i, pair in enumerate(zip(predictions["labels"],
                                                          predictions["predicted"]))}
    return {key: (value["label"], value["predicted"]) for key, value in predictions.items()}


def compare(first: dict[str, dict], second: dict[str, dict]) -> dict | None:
    """Paired bootstrap of `first` against `second` (both from seed_predictions), example by
    example (matched by id) over their common seeds; None when they share no seed or were
    not tested on the same examples with the same labels."""
    from .significance import paired_bootstrap

    seeds = sorted(set(first) & set(second))
    if not seeds:
        return None
    ids = sorted(first[seeds[0]]["by_id"])
    for s in seeds:
        a, b = first[s]["by_id"], second[s]["by_id"]
        if sorted(a) != ids or sorted(b) != ids or any(a[i][0] != b[i][0] for i in ids):
            return None
    labels = [first[seeds[0]]["by_id"][i][0] for i in ids]
    return paired_bootstrap(labels, [[first[s]["by_id"][i][1] for i in ids] for s in seeds],
                            [[second[s]["by_id"][i][1] for i in ids] for s in seeds],
                            num_classes=first[seeds[0]]["classes"])


def significance(board: dict[str, list[Entry]]) -> dict[tuple[str, str], dict]:
    """(task, strategy) -> paired bootstrap of the task's leader against that strategy; and
    (task, "a>b") -> the same test of each strategy against the next one in the ranking."""
    tests = {}
    for task, entries in board.items():
        ranked = [e for e in entries if e.runs]
        if not ranked:
            continue
        predictions = [seed_predictions(e) for e in ranked]
        for e, other in zip(ranked[1:], predictions[1:]):
            test = compare(predictions[0], other) if predictions[0] else None
            if test is not None:
                tests[(task, e.strategy)] = test
        for i in range(1, len(ranked) - 1):
            test = compare(predictions[i], predictions[i + 1]) if predictions[i] else None
            if test is not None:
                tests[(task, f"{ranked[i].strategy}>{ranked[i + 1].strategy}")] = test
    return tests


SOLID_MIN_SEEDS = 3  # on one or two seeds, "ahead on every seed" is too easily luck


def solid(test: dict | None, reverse: bool = False) -> bool:
    """A gap that holds both ways the result could be luck: p < 0.05 over test examples,
    and the better strategy ahead on every seed, of at least three (reverse: the second
    strategy is the better one)."""
    if not test or test["seeds"] < SOLID_MIN_SEEDS:
        return False
    if reverse:
        return test["p_value"] > 0.95 and test["seeds_lost"] == test["seeds"]
    return test["p_value"] < 0.05 and test["seeds_won"] == test["seeds"]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _p_cell(test: dict | None) -> str:
    if test is None:
        return "–"
    p = test["p_value"]
    return (p_text(p) + (" *" if p < 0.05 else "")
            + f" ({test['seeds_won']}/{test['seeds']})")


NOT_RECORDED = "not recorded (trial files older than the record)"


def cpu_lines(board: dict[str, list[Entry]]) -> list[str]:
    """Which CPUs the board's runs trained on (model and the flags that set precision and
    speed), and, when there were several, that their seconds do not compare: a suite may
    finish on another machine of the same precision, so its F1 and steps stand but its
    timings mix."""
    counts: dict[str, int] = {}
    for r in (r for entries in board.values() for e in entries for r in e.runs):
        env = r.result().get("environment", {})
        if env.get("device", "cpu") != "cpu":
            continue
        name = (f"{env['cpu_model']} ({', '.join(env.get('cpu_flags', [])) or 'no AVX2'})"
                if env.get("cpu_model") else NOT_RECORDED)
        counts[name] = counts.get(name, 0) + 1
    if set(counts) <= {NOT_RECORDED}:
        return []
    line = "CPUs: " + "; ".join(f"{name}: {n} run{'s' * (n != 1)}" for name, n in sorted(counts.items())) + "."
    if len(counts) > 1:
        line += (" Seconds (to target, wall time) come from different CPUs and compare only "
                 "between runs of one CPU; F1 and steps to target are not timings.")
    return [line, ""]


def reused_worker_lines(board: dict[str, list[Entry]]) -> list[str]:
    """How many runs trained in a worker process that had run earlier trials (a suite with
    `resources.reuse_workers`): their RSS includes what those left."""
    runs = [r for entries in board.values() for e in entries for r in e.runs]
    reused = sum(1 for r in runs if r.tags.get("worker_trials_before"))
    if not reused:
        return []
    return [f"RSS: {reused} of {len(runs)} runs trained in a worker process that earlier trials "
            "had used (`resources.reuse_workers`); their peak RSS includes what those left, so "
            "it is not theirs alone. Tensor peaks are unaffected.", ""]


def markdown(suite: str, board: dict[str, list[Entry]], source: RunSource,
             tests: dict[tuple[str, str], dict] | None = None) -> str:
    tests = tests or {}
    lines = [f"# Leaderboard: suite `{suite}`", "",
             f"From {source.describe()}, {time.strftime('%Y-%m-%d %H:%M')}. Per task, "
             f"{_selection_wording(board)}, mean ± std over seeds.", "",
             "p vs #1: paired bootstrap over the test examples (the same resamples for both "
             "strategies and every seed, seed-mean macro F1, 2000 resamples): the share of "
             "resamples in which the strategy scores at least as well as the task's first. "
             "* marks p < 0.05, a gap that does not hinge on which examples were drawn. "
             "The resampling does not cover training randomness: (k/n) counts the seeds on "
             "which #1 alone scored higher; a gap is solid only with a small p and #1 ahead "
             f"on every seed, of at least {SOLID_MIN_SEEDS}. – where no test predictions were saved.", ""]
    if source.new_entries:
        lines += [NEW_MARK_NOTE, ""]
    commits = sorted({r.tags.get("git_commit", "?") for es in board.values() for e in es for r in e.runs})
    devices = sorted({r.tags.get("device", "?") for es in board.values() for e in es for r in e.runs})
    if commits:
        lines += [f"Commits: {', '.join(commits)}; devices: {', '.join(devices)}.", ""]
    codes = {r.tags["training_code"] for es in board.values() for e in es for r in e.runs
             if "training_code" in r.tags}
    if codes:
        lines += ["Training code (sha256 of benchmark/trial/, strategies/, tasks/): "
                  + (f"{codes.pop()}, the same for every run." if len(codes) == 1 else
                     f"{len(codes)} versions ({', '.join(sorted(codes))}): runs trained under "
                     "different code (`run --allow-mixed-code`)."), ""]
    lines += cpu_lines(board)
    lines += reused_worker_lines(board)
    lines += _model_lines(board)
    for task, entries in board.items():
        staged = any(e.candidates or e.cut for e in entries)
        target = convergence.task_target(entries)
        # With a learning curve, time to target replaces steps-to-converge (relative to each
        # run's own best, which says little when every run is still improving).
        speed_head = ("steps to target | s to target" if target else "steps to converge")
        # Live tensor memory where the runs recorded it (issue 31), RSS beside it.
        tensors = any(e.metric("tensor_peak_mb") for e in entries)
        memory_head = ("peak memory (MiB): tensors / RSS" if tensors else "peak memory (MiB)")
        lines += [f"## {task}", "",
                  "| rank | strategy | test macro F1 | p vs #1 | test acc | dev macro F1 | seeds "
                  f"| {speed_head} | {memory_head} | wall time (s) | trainable share "
                  "| chosen hyperparameters |" + (" chosen from (stage one: mean dev macro F1) |"
                                                  if staged else ""),
                  "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if target else "")
                  + ("---|" if staged else "")]
        blank = (" |" if staged else "") + (" |" if target else "")
        for rank, e in enumerate(entries, 1):
            if not e.runs:
                error = e.failed[0].tags.get("error", "failed") if e.failed else "no finished run"
                lines.append(f"| – | {source.mark(e.strategy)} | FAILED ({len(e.failed)} runs): "
                             f"{error[:80].replace('|', '/')} | | | | | | | | | |" + blank)
                continue
            share = e.mean("trainable_share")
            failed = f" ({len(e.failed)} failed)" if e.failed else ""
            spread = f" ± {_fmt(e.std('test_macro_f1'))}" if len(e.runs) > 1 else ""
            chosen_from = (" " + " · ".join(
                [f"{_hyper_text(c)}: {m:.3f}" for c, m, _ in e.candidates]
                + [f"{_hyper_text(c)}: cut at step {step}" for c, step in e.cut])
                + " |") if staged else ""
            lines.append(
                f"| {rank} | {source.mark(e.strategy)} | {_fmt(e.mean('test_macro_f1'))}{spread} "
                f"| {'' if rank == 1 else _p_cell(tests.get((task, e.strategy)))} "
                f"| {_fmt(e.mean('test_accuracy'))} | {_fmt(e.mean('dev_best_macro_f1'))} "
                f"| {len(e.runs)}{failed} | {_speed_cells(e, target)} "
                f"| {_memory_cell(e, tensors)} | {_fmt(e.mean('wall_time_s'), 0)} "
                f"| {_fmt(100 * share if share is not None else None, 2)}% | {_hyper_text(e.config)} |"
                + chosen_from)
        majority = majority_f1(entries)
        if majority is not None:
            lines.append(f"| – | majority class (floor) | {_fmt(majority)} | | | | | | | | | "
                         "predicts the train split's most frequent label |" + blank)
        notes = ([convergence.target_line(target)] if target else []) + selection_lines(entries)
        lines += ["", *[x for note in notes for x in (note, "")], *_gap_lines(task, entries, tests), ""]
    return "\n".join(lines)


def _speed_cells(entry: Entry, target) -> str:
    if target is None:
        return _fmt(entry.mean("steps_to_converge"), 0)
    timed = convergence.entry_time(entry, target)
    if timed is None:
        return "– | –"
    return f"{timed.text()} | {timed.text(seconds=True)}"


def _gap_lines(task: str, entries: list[Entry], tests: dict) -> list[str]:
    """Which gaps are solid: #1 against each other strategy, and each against the next."""
    ranked = [e for e in entries if e.runs]
    if len(ranked) < 2:
        return []
    leader = ranked[0].strategy

    def verdict(test: dict | None) -> str:
        if test is None:
            return "untested (no paired predictions)"
        state = "solid" if solid(test) else "not solid"
        few = f"; fewer than {SOLID_MIN_SEEDS} seeds" if test["seeds"] < SOLID_MIN_SEEDS else ""
        return f"{state} (p {p_text(test['p_value'])}, {test['seeds_won']}/{test['seeds']} seeds{few})"

    ahead = [f"{leader} > {e.strategy}: {verdict(tests.get((task, e.strategy)))}"
             for e in ranked[1:]]
    steps = [f"{a.strategy} > {b.strategy}: {verdict(tests.get((task, f'{a.strategy}>{b.strategy}')))}"
             for a, b in zip(ranked[1:], ranked[2:])]
    return ([f"Gaps to #1 (solid: p < 0.05 and #1 ahead on every seed, of at least "
             f"{SOLID_MIN_SEEDS}): " + "; ".join(ahead) + "."]
            + (["", "Between neighbours in the ranking: " + "; ".join(steps) + "."] if steps else []))


def _model_lines(board: dict[str, list[Entry]]) -> list[str]:
    """Which model the figures are for; an alias carries its caveats (e.g. quantised weights)."""
    from ..trial.models import MODELS

    models = sorted({r.params.get("model", "?") for es in board.values() for e in es
                     for r in e.runs})
    return [f"Model `{m}`" + (f": {MODELS.get(m).description}." if m in MODELS else ".")
            for m in models] + ([""] if models else [])


def write_html(md: str, plots: list[Path], path: Path) -> None:
    body = "".join(_md_table_to_html(block) for block in md.split("\n\n"))
    images = "".join(f'<figure><img src="{p.name}" alt="{p.stem}"><figcaption>{p.stem.replace("_", " ")}'
                     "</figcaption></figure>" for p in plots)
    write_if_changed(path, "<!doctype html><html><head><meta charset='utf-8'><title>Leaderboard</title>"
                    "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
                    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
                    "img{max-width:100%}</style></head><body>" + body + images + "</body></html>")


def _inline(text: str) -> str:
    """Markdown inline text as HTML: escaped, `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _md_table_to_html(block: str) -> str:
    lines = [l for l in block.strip().splitlines() if l.strip()]
    if not lines:
        return ""
    if lines[0].startswith("# "):
        return f"<h1>{_inline(lines[0][2:])}</h1>" + _md_table_to_html("\n".join(lines[1:]))
    if lines[0].startswith("## "):
        return f"<h2>{_inline(lines[0][3:])}</h2>" + _md_table_to_html("\n".join(lines[1:]))
    if lines[0].startswith("|"):
        rows = [[_inline(c.strip()) for c in l.strip("|").split("|")] for l in lines if not l.startswith("|---")]
        head = "".join(f"<th>{c}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows[1:])
        return f"<table><tr>{head}</tr>{body}</table>"
    return f"<p>{_inline(' '.join(lines))}</p>"


# The provenance sentence of a board, report or card ("From <source>, <time>", "Written
# <time>"): a file regenerated from the same runs differs from the committed one only there.
_PROVENANCE = re.compile(r"(From|Written) [^\n]*?\d{4}-\d{2}-\d{2} \d{2}:\d{2}")


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` unless the file already says the same but for its provenance sentence
    (when and from which store it was rendered): regenerating a committed board from the
    same runs leaves it untouched, so `git status` stays clean. Returns whether it wrote."""
    try:
        old = path.read_text()
    except (OSError, UnicodeDecodeError):
        old = None
    if old is not None and _PROVENANCE.sub("", old) == _PROVENANCE.sub("", text):
        return False
    path.write_text(text)
    return True


def missing_trial_files(records: list[RunRecord], out_dir: Path) -> int:
    """How many FINISHED trial files under out_dir/trials no record stands for: a board
    rendered from those records would be a partial one there."""
    import json

    keys = {r.tags.get("trial_key") for r in records if r.status == "FINISHED"}
    missing = 0
    for path in (out_dir / "trials").glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("status") == "FINISHED" and record.get("trial_key") not in keys:
            missing += 1
    return missing


def write_board(suite: str, board: dict[str, list[Entry]], source: RunSource, results_dir: Path,
                focus: str | None = None, out_dir: Path | None = None,
                records: list[RunRecord] | None = None) -> str:
    """Write leaderboard.md, leaderboard.html and plots under out_dir (default
    results_dir/<suite>); return the Markdown. Given the `records` the board is made from,
    a folder whose trial files hold runs they lack is not written to: a partial board never
    replaces a full one (PartialBoard says so; the Markdown is on it)."""
    from .plots import write_plots

    md = markdown(suite, board, source, significance(board))
    out_dir = out_dir or results_dir / Path(suite).stem
    if records is not None:
        missing = missing_trial_files(records, out_dir)
        if missing:
            raise PartialBoard(md, out_dir, missing)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_if_changed(out_dir / "leaderboard.md", md + "\n")
    plots = write_plots(board, out_dir, focus)
    write_html(md, plots, out_dir / "leaderboard.html")
    return md


class PartialBoard(Exception):
    """A board that lacks runs whose trial files are in the folder it would be written to."""

    def __init__(self, markdown: str, folder: Path, missing: int):
        self.markdown, self.folder, self.missing = markdown, folder, missing
        super().__init__(f"{folder}/leaderboard.md not written: these runs lack {missing} "
                         f"FINISHED trial file(s) of {folder / 'trials'}, so the board there "
                         f"would be a partial one; render it from them: python -m benchmark "
                         f"leaderboard --from-results {folder}")
