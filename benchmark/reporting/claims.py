"""`python -m benchmark claims --suite S`: results/<suite>/claims.md, the paper's claims
checked against a suite's runs.

The IR-Tuning abstract makes four claims; this card states each for the suite's `focus`
strategy (so a new method gets the same card) and gives a verdict from the run records:
supported, not supported, or not testable here, with the figures it rests on.

1. Accuracy: the focus outperforms the layer-wise baselines (the other entries that
   choose blocks step by step). Supported when its gap over every one of them is solid
   (the leaderboard's rule: paired bootstrap p < 0.05 and ahead on every seed, of >= 3).
2. Fast convergence: the focus reaches the task's target (convergence.py) in fewer steps
   than every layer-wise baseline and LoRA on every seed (a run that never reaches it
   counts as slowest), with >= 3 seeds.
3. Low memory: on a GPU, the focus's peak memory (NVML) is below LoRA's and full
   fine-tuning's on every seed. A CPU's peak RSS says which strategies hold more weights,
   gradients and optimizer state, not what a GPU would need: not testable here.
4. Small corpora: in the companion suite on a fraction of the training rows
   (`<suite>-small` by default), the focus beats the majority class on every seed and no
   other strategy is solidly ahead of it.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from . import convergence, leaderboard
from .runs import RunRecord, RunSource
from .selection import entry_dynamics

SUPPORTED, NOT_SUPPORTED, UNTESTABLE = "supported", "not supported", "not testable here"


def _layerwise(entry) -> bool:
    return any(r.selection_trace() for r in entry.runs)


def _variant_of(entry, focus: str) -> bool:
    """Another entry of the focus strategy (e.g. the reference's frozen head): a caveat,
    never a baseline the focus must beat."""
    return (entry.strategy != focus and bool(entry.runs)
            and entry.runs[0].params.get("strategy") == focus)


def _baseline(entry, focus: str) -> bool:
    return _layerwise(entry) and not _variant_of(entry, focus)


def _fmt(value, digits: int = 3) -> str:
    return leaderboard._fmt(value, digits)


def _focus(entries, focus: str):
    return next((e for e in entries if e.strategy == focus and e.runs), None)


def accuracy_claim(task: str, entries, focus: str) -> tuple[str, list[str]]:
    mine = _focus(entries, focus)
    baselines = [e for e in entries if e is not mine and e.runs and _baseline(e, focus)]
    if mine is None or not baselines:
        return UNTESTABLE, [f"No {focus} runs or no layer-wise baselines on {task}."]
    mine_predictions = leaderboard.seed_predictions(mine)
    rows, solid_all = [], True
    for e in sorted(entries, key=lambda e: -(e.mean("test_macro_f1") or 0)):
        if e is mine or not e.runs:
            continue
        test = leaderboard.compare(mine_predictions, leaderboard.seed_predictions(e))
        if test is None:
            verdict = "no paired predictions"
        elif leaderboard.solid(test):
            verdict = f"{focus} solidly ahead"
        elif leaderboard.solid(test, reverse=True):
            verdict = f"{e.strategy} solidly ahead"
        else:
            verdict = "no solid gap"
        if _baseline(e, focus) and verdict != f"{focus} solidly ahead":
            solid_all = False
        gap = f"{test['gap']:+.3f}" if test else "–"
        p = leaderboard.p_text(test["p_value"]) if test else "–"
        seeds = f"{test['seeds_won']}/{test['seeds']}" if test else "–"
        kind = ("variant (not a baseline)" if _variant_of(e, focus)
                else "layer-wise" if _layerwise(e) else "other")
        rows.append(f"| {e.strategy} | {kind} | {_fmt(e.mean('test_macro_f1'))} | {gap} | {p} | {seeds} | {verdict} |")
    lines = [f"{focus}: test macro F1 {_fmt(mine.mean('test_macro_f1'))} ± "
             f"{_fmt(mine.std('test_macro_f1'))} over {len(mine.runs)} seeds.", "",
             f"| strategy | kind | test macro F1 | gap ({focus} − it) | p | seeds {focus} won | verdict |",
             "|---|---|---|---|---|---|---|", *rows]
    return (SUPPORTED if solid_all else NOT_SUPPORTED), lines


def convergence_claim(task: str, entries, focus: str) -> tuple[str, list[str]]:
    target = convergence.task_target(entries)
    mine = _focus(entries, focus)
    if target is None or mine is None:
        return UNTESTABLE, ["No learning curves recorded (the suite sets no `curve_every`): "
                            "steps to target cannot be measured."]
    mine_steps = _steps_by_seed(mine, target.value)
    rivals = [e for e in entries if e is not mine and e.runs
              and (_baseline(e, focus) or e.strategy == "lora")]
    rows, faster_all = [], len(mine_steps) >= leaderboard.SOLID_MIN_SEEDS and bool(rivals)
    for e in entries:
        timed = convergence.entry_time(e, target) if e.runs else None
        if timed is None:
            continue
        steps = _steps_by_seed(e, target.value)
        comparison = ""
        if e is not mine:
            seeds = sorted(set(steps) & set(mine_steps))
            earlier = sum(mine_steps[s] < steps[s] for s in seeds)
            comparison = f"{earlier}/{len(seeds)}"
            if e in rivals and (earlier < len(seeds) or len(seeds) < leaderboard.SOLID_MIN_SEEDS):
                faster_all = False
        per_seed = ", ".join("never" if steps[s] == float("inf") else f"{steps[s]:.0f}"
                             for s in sorted(steps))
        rows.append(f"| {e.strategy} | {timed.text()} | {timed.text(seconds=True)} | {per_seed} | {comparison} |")
    lines = [convergence.target_line(target), "",
             f"| strategy | steps to target | s to target | steps per seed | seeds {focus} reached it earlier |",
             "|---|---|---|---|---|", *rows, "",
             f"Rule: supported when {focus} reaches the target at an earlier curve point than "
             f"every layer-wise baseline and LoRA on every seed, with at least "
             f"{leaderboard.SOLID_MIN_SEEDS} seeds (a run that never reaches it is slowest)."]
    return (SUPPORTED if faster_all else NOT_SUPPORTED), lines


def _steps_by_seed(entry, target: float) -> dict[str, float]:
    out = {}
    for run in entry.runs:
        mark = convergence.reached(run, target)
        if mark is not None:
            out[run.seed] = float("inf") if mark.step is None else float(mark.step)
    return out


def memory_claim(task: str, entries, focus: str) -> tuple[str, list[str]]:
    mine = _focus(entries, focus)
    if mine is None:
        return UNTESTABLE, [f"No {focus} runs on {task}."]
    sources = {r.tags.get("memory_source", "?") for e in entries for r in e.runs}
    rows = [f"| {e.strategy} | {_fmt(e.mean('peak_memory_mb'), 0)} | "
            f"{_fmt(100 * e.mean('trainable_share') if e.mean('trainable_share') is not None else None, 2)}% |"
            for e in entries if e.runs]
    lines = [f"Peak memory per strategy (MiB, mean over seeds; source: {', '.join(sorted(sources))}):", "",
             "| strategy | peak memory (MiB) | trainable share |", "|---|---|---|", *rows, ""]
    if not any(s.startswith("nvml") for s in sources):
        lines.append(
            "These runs are on a CPU: peak RSS counts the process's weights, gradients, "
            "optimizer state and activations in host memory, so it does show which strategies "
            "hold more of them, but not what a GPU needs (the CUDA allocator's caching, "
            "kernels' workspaces, activation memory at GPU batch sizes and sequence lengths). "
            "The paper's claim is about GPU memory; it needs the GPU run (`results/gpu.md`).")
        return UNTESTABLE, lines
    others = [e for e in entries if e.strategy in ("lora", "full-ft") and e.runs]
    below = bool(others) and all(max(mine.metric("peak_memory_mb")) < min(e.metric("peak_memory_mb"))
                                 for e in others)
    lines.append(f"Rule: supported when every {focus} run peaks below every run of LoRA and "
                 "full fine-tuning.")
    return (SUPPORTED if below else NOT_SUPPORTED), lines


def small_corpus_claim(entries, focus: str, task: str, rows: int | None,
                       full_rows: int | None) -> tuple[str, list[str]]:
    mine = _focus(entries, focus)
    if mine is None:
        return UNTESTABLE, ["The small-corpus suite has no finished runs of the focus strategy."]
    majority = leaderboard.majority_f1(entries)
    above_floor = majority is not None and all(f > majority for f in mine.metric("test_macro_f1"))
    behind = []
    mine_predictions = leaderboard.seed_predictions(mine)
    for e in entries:
        if e is not mine and e.runs:
            test = leaderboard.compare(mine_predictions, leaderboard.seed_predictions(e))
            if leaderboard.solid(test, reverse=True):
                behind.append(e.strategy)
    table = [f"| {e.strategy} | {_fmt(e.mean('test_macro_f1'))} ± {_fmt(e.std('test_macro_f1'))} | {len(e.runs)} |"
             for e in entries if e.runs]
    size = f"{rows} of {full_rows} training rows" if rows and full_rows else "a fraction of the training rows"
    lines = [f"{task} on {size}:", "", "| strategy | test macro F1 | seeds |", "|---|---|---|", *table,
             f"| majority class | {_fmt(majority)} | |", "",
             f"{focus} above the majority class on every seed: {'yes' if above_floor else 'no'}; "
             f"strategies solidly ahead of it: {', '.join(behind) or 'none'}.", "",
             f"Rule: supported when {focus} beats the majority class on every seed and no other "
             "strategy is solidly ahead of it."]
    return (SUPPORTED if above_floor and not behind else NOT_SUPPORTED), lines


def render_claims(suite: str, records: list[RunRecord], source: RunSource, focus: str,
                  results_dir: Path, small: tuple[list[RunRecord], RunSource] | None = None) -> Path:
    board = leaderboard.collect(records)
    lines = [f"# Claims card: suite `{suite}`, focus `{focus}`", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M')} from {source.describe()}"
             + (f" and {small[1].describe()}" if small else "")
             + f" by `python -m benchmark claims --suite {suite}`.", "",
             "The IR-Tuning abstract (Liu & Litman, EMNLP 2025) claims the method outperforms "
             "several layer-wise PEFT baselines, converges fast, uses little GPU memory and works "
             f"on small revision corpora. Each claim below is stated for `{focus}` and judged "
             "from this suite's runs alone. Solid gap: paired bootstrap over test examples "
             f"p < 0.05 and ahead on every seed, of at least {leaderboard.SOLID_MIN_SEEDS}.", ""]
    lines += leaderboard.cpu_lines(board)
    stem = Path(suite).stem
    small_board = leaderboard.collect(small[0]) if small is not None else {}
    base = stem.removesuffix("-small")
    no_small_why = (f"This suite is the small-corpus companion of `{base}`: the claim is judged "
                    f"in `{base}`'s card, against its full-corpus runs."
                    if base != stem else
                    f"No small-corpus suite results were found (by default `{suite}-small`).")
    verdicts = []
    for task, entries in board.items():
        mine = _focus(entries, focus)
        dynamics = entry_dynamics(mine) if mine else None
        lines += [f"## {task}", ""]
        if dynamics:
            lines += [f"What {focus} trained: {dynamics.text()}.", ""]
        sections = [("1. Outperforms the layer-wise baselines", accuracy_claim(task, entries, focus)),
                    ("2. Converges fast", convergence_claim(task, entries, focus)),
                    ("3. Uses little memory", memory_claim(task, entries, focus))]
        if task in small_board:
            small_entries = small_board[task]
            sections.append(("4. Works on small corpora", small_corpus_claim(
                small_entries, focus, task, _train_rows(small_entries), _train_rows(entries))))
        else:
            sections.append(("4. Works on small corpora", (UNTESTABLE, [no_small_why])))
        for title, (verdict, body) in sections:
            verdicts.append((task, title, verdict))
            lines += [f"### {title}: **{verdict}**", "", *body, ""]
        lines += _variants(entries, focus)
    lines += ["## Summary", "", "| task | claim | verdict |", "|---|---|---|",
              *[f"| {t} | {c} | {v} |" for t, c, v in verdicts], ""]
    out_dir = results_dir / stem
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "claims.md"
    path.write_text("\n".join(lines))
    return path


def _train_rows(entries) -> int | None:
    for e in entries:
        for r in e.runs:
            rows = r.result().get("sizes", {}).get("train")
            if rows:
                return int(rows)
    return None


def _variants(entries, focus: str) -> list[str]:
    """Other entries of the focus strategy (e.g. the reference's frozen head) as caveats."""
    mine = _focus(entries, focus)
    variants = [e for e in entries if _variant_of(e, focus)]
    if mine is None or not variants:
        return []
    lines = ["### Caveat: variants of the focus strategy", ""]
    for e in variants:
        options = {k[4:]: v for k, v in e.runs[0].params.items() if k.startswith("opt.")}
        differs = {k: v for k, v in options.items()
                   if mine.runs[0].params.get(f"opt.{k}") != v}
        lines.append(f"- `{e.strategy}` ({', '.join(f'{k}={v}' for k, v in differs.items()) or 'same options'}; "
                     f"{len(e.runs)} seed(s)): test macro F1 {_fmt(e.mean('test_macro_f1'))} against "
                     f"{_fmt(mine.mean('test_macro_f1'))} for `{focus}`"
                     + (" on the same seeds: " + ", ".join(
                         f"seed {r.seed} {_fmt(r.metrics.get('test_macro_f1'))} vs "
                         f"{_fmt(next((m.metrics.get('test_macro_f1') for m in mine.runs if m.seed == r.seed), None))}"
                         for r in e.runs) if e.runs else "") + ".")
    return lines + [""]
