"""`python -m benchmark claims --suite S`: results/<suite>/claims.md, the paper's claims
checked against a suite's runs.

The IR-Tuning abstract makes four claims; this card states each for the suite's `focus`
strategy, or for a comparison's new entry (`run --only`: its runs with the committed ones
they were ranked with, read by runs.with_committed), and gives a verdict from the run
records: supported, not supported, or not testable here, with the figures it rests on.

1. Accuracy: the focus outperforms the layer-wise baselines (the other entries that
   choose blocks step by step, as each strategy class declares with `layerwise`, its trial
   files record, or `--kind` says). Supported when its gap over every one of them is solid.
   Two rules, as the suite's `statistics:` says: `paired-bootstrap` (the leaderboard's:
   bootstrap over test examples p < 0.05 and ahead on every seed, of >= 3) or
   `hierarchical` (verdicts.py: seeds and examples resampled together, two-sided, Holm
   across the claim's baselines, the verdict checked under 20 generator seeds).
2. Fast convergence: the focus reaches the task's target (convergence.py) in fewer steps
   than every layer-wise baseline and LoRA on every seed (a run that never reaches it
   counts as slowest), with >= 3 seeds.
3. Low memory: on a GPU, the focus's peak memory (NVML) is below LoRA's and full
   fine-tuning's on every seed. A CPU's peak RSS says which strategies hold more weights,
   gradients and optimizer state, not what a GPU would need: not testable here.
4. Small corpora: in the companion suite on a fraction of the training rows
   (`<suite>-small` by default; for a comparison `S+m`, `S-small`, or `S-small+m` when the
   method was compared there too), the focus beats the majority class on every seed and no
   other strategy is solidly ahead of it.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from ..core.errors import UserError
from . import convergence, leaderboard, verdicts
from .runs import NEW_MARK_NOTE, RunRecord, RunSource
from .selection import entry_dynamics

SUPPORTED, NOT_SUPPORTED, UNTESTABLE = "supported", "not supported", "not testable here"
# How gaps are tested (a suite's `statistics:`): the leaderboard's rule, or verdicts.py's.
PAIRED, HIERARCHICAL = "paired-bootstrap", "hierarchical"
STATISTICS = (PAIRED, HIERARCHICAL)


# entry -> declared kind ("layer-wise" or "other"), given with `claims --kind ENTRY=KIND` for
# an entry whose class is not importable here and whose trial files predate the record.
KINDS = ("layer-wise", "other")


def _layerwise(entry, declared: dict[str, str] | None = None) -> bool:
    """Whether an entry is a layer-wise strategy (it chooses blocks step by step): as asked
    for (`--kind`), else as its class declares (`layerwise`, for a strategy registered here,
    --include-path included), else as its trial files recorded that declaration, else from
    its selection traces."""
    if declared and entry.strategy in declared:
        return declared[entry.strategy] == "layer-wise"
    strategy = entry.runs[0].params.get("strategy") if entry.runs else None
    if strategy:
        from strategies import STRATEGIES

        if strategy in STRATEGIES:
            return bool(getattr(STRATEGIES.get(strategy), "layerwise", False))
    recorded = {r.tags.get("strategy_layerwise") for r in entry.runs} - {None}
    if recorded:
        return "true" in recorded
    return any(r.selection_trace() for r in entry.runs)


def _variant_of(entry, focus: str) -> bool:
    """Another entry of the focus strategy (e.g. the reference's frozen head): a caveat,
    never a baseline the focus must beat."""
    return (entry.strategy != focus and bool(entry.runs)
            and entry.runs[0].params.get("strategy") == focus)


def _baseline(entry, focus: str, declared: dict[str, str] | None = None) -> bool:
    return _layerwise(entry, declared) and not _variant_of(entry, focus)


def _fmt(value, digits: int = 3) -> str:
    return leaderboard._fmt(value, digits)


def _focus(entries, focus: str):
    return next((e for e in entries if e.strategy == focus and e.runs), None)


def accuracy_claim(task: str, entries, focus: str, declared: dict[str, str] | None = None,
                   source: RunSource | None = None,
                   statistics: str = PAIRED) -> tuple[str, list[str]]:
    mine = _focus(entries, focus)
    baselines = [e for e in entries if e is not mine and e.runs and _baseline(e, focus, declared)]
    if mine is None:
        return UNTESTABLE, [f"No finished {focus} runs on {task}."]
    if not baselines:
        return UNTESTABLE, [f"No layer-wise baselines on {task} (entries that choose blocks "
                            "step by step) to judge it against."]
    mark = source.mark if source else str
    if statistics == HIERARCHICAL:
        return _hierarchical_accuracy(entries, mine, baselines, focus, declared, mark)
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
        if _baseline(e, focus, declared) and verdict != f"{focus} solidly ahead":
            solid_all = False
        gap = f"{test['gap']:+.3f}" if test else "–"
        p = leaderboard.p_text(test["p_value"]) if test else "–"
        seeds = f"{test['seeds_won']}/{test['seeds']}" if test else "–"
        kind = ("variant (not a baseline)" if _variant_of(e, focus)
                else "layer-wise" if _layerwise(e, declared) else "other")
        rows.append(f"| {mark(e.strategy)} | {kind} | {_fmt(e.mean('test_macro_f1'))} | {gap} | {p} | {seeds} | {verdict} |")
    own_kind = "layer-wise" if _layerwise(mine, declared) else "other"
    lines = [f"{focus} ({own_kind}): test macro F1 {_fmt(mine.mean('test_macro_f1'))} ± "
             f"{_fmt(mine.std('test_macro_f1'))} over {len(mine.runs)} seeds.", "",
             f"| strategy | kind | test macro F1 | gap ({focus} − it) | p | seeds {focus} won | verdict |",
             "|---|---|---|---|---|---|---|", *rows]
    lines += ["", f"Rule: supported when {focus}'s gap over every layer-wise baseline is solid "
              "(kind: as each strategy declares it, its class's `layerwise`)."]
    return (SUPPORTED if solid_all else NOT_SUPPORTED), lines


def _kind(entry, focus: str, declared: dict[str, str] | None) -> str:
    return ("variant (not a baseline)" if _variant_of(entry, focus)
            else "layer-wise" if _layerwise(entry, declared) else "other")


def _judged(mine, others) -> tuple[list[verdicts.Verdict], list[str]]:
    """verdicts.judge_claim of the focus against `others` (one Holm family), and the
    entries whose runs do not pair with the focus's (left out of the family)."""
    pairs, unpaired = {}, []
    for e in others:
        paired = verdicts.paired_predictions(mine.runs, e.runs)
        if paired is None:
            unpaired.append(e.strategy)
        else:
            pairs[e.strategy] = paired
    return verdicts.judge_claim(pairs), unpaired


def _verdict_table(judged: list[verdicts.Verdict], by_name: dict, focus: str,
                   declared: dict[str, str] | None, mark) -> list[str]:
    rows = []
    for v in judged:
        e = by_name[v.baseline]
        word = {verdicts.AHEAD: f"{focus} ahead", verdicts.BEHIND: f"{v.baseline} ahead"}.get(
            v.verdict, v.verdict)
        favoured = focus if v.aso_favours == "focus" else v.baseline
        rows.append(
            f"| {mark(v.baseline)} | {_kind(e, focus, declared)} | {_fmt(e.mean('test_macro_f1'))} "
            f"± {_fmt(e.std('test_macro_f1'))} ({len(v.baseline_f1)}) | {v.gap:+.3f} "
            f"[{v.ci_low:+.3f}, {v.ci_high:+.3f}] | {leaderboard.p_text(v.p_value)} | "
            f"{leaderboard.p_text(v.holm_p_value)} ({leaderboard.p_text(v.holm_p_range[0])}–"
            f"{leaderboard.p_text(v.holm_p_range[1])}) | {word} ({v.seeds_agreeing}/"
            f"{v.stability_seeds}) | {v.aso_epsilon_min:.2f} for {favoured} |")
    return [f"| strategy | kind | test macro F1 (seeds) | gap ({focus} − it) [95% CI] | p | "
            "Holm p (range over generator seeds) | verdict (re-runs agreeing) | ASO ε_min |",
            "|---|---|---|---|---|---|---|---|", *rows]


def _hierarchical_accuracy(entries, mine, baselines, focus: str,
                           declared: dict[str, str] | None, mark) -> tuple[str, list[str]]:
    """Claim 1 under verdicts.py's rule: one Holm family of the layer-wise baselines; the
    other entries (LoRA, full fine-tuning, variants, the floor) as a second family, for
    context only."""
    by_name = {e.strategy: e for e in entries}
    others = [e for e in entries if e is not mine and e.runs
              and not any(e is b for b in baselines)]
    judged, unpaired = _judged(mine, baselines)
    context, context_unpaired = _judged(mine, others) if others else ([], [])
    lines = [f"{focus}: test macro F1 {_fmt(mine.mean('test_macro_f1'))} ± "
             f"{_fmt(mine.std('test_macro_f1'))} over {len(mine.runs)} seeds.", "",
             "Layer-wise baselines (the claim's family):", "",
             *_verdict_table(judged, by_name, focus, declared, mark)]
    if context:
        lines += ["", "Other entries (a separate family, for context; not part of the rule):",
                  "", *_verdict_table(context, by_name, focus, declared, mark)]
    if unpaired or context_unpaired:
        lines += ["", "Not tested (their test predictions do not pair with the focus's): "
                  + ", ".join(unpaired + context_unpaired) + "."]
    lines += ["", f"Rule: supported when {focus} is ahead of every layer-wise baseline "
              "(Holm-corrected p < 0.05, gap positive, the same verdict under every generator "
              "seed)."]
    supported = not unpaired and all(v.verdict == verdicts.AHEAD for v in judged)
    return (SUPPORTED if supported else NOT_SUPPORTED), lines


def convergence_claim(task: str, entries, focus: str,
                      declared: dict[str, str] | None = None) -> tuple[str, list[str]]:
    target = convergence.task_target(entries)
    mine = _focus(entries, focus)
    if target is None or mine is None:
        return UNTESTABLE, ["No learning curves recorded (the suite sets no `curve_every`): "
                            "steps to target cannot be measured."]
    mine_steps = _steps_by_seed(mine, target.value)
    rivals = [e for e in entries if e is not mine and e.runs
              and (_baseline(e, focus, declared) or e.strategy == "lora")]
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
    rule = convergence.entries_budget_rule([e for e in entries if e.runs])
    if rule is not None:  # were the curves still rising when the budget ended?
        lines += ["", "End slopes: " + rule.text()]
    return (SUPPORTED if faster_all else NOT_SUPPORTED), lines


def _steps_by_seed(entry, target: float) -> dict[str, float]:
    out = {}
    for run in entry.runs:
        mark = convergence.reached(run, target)
        if mark is not None:
            out[run.seed] = float("inf") if mark.step is None else float(mark.step)
    return out


MEMORY_ESTIMATE = Path("memory") / "llama-3.1-8b.json"  # under the results folder
MEMORY_CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations", "temporaries")
GPU_ADDS = ("What a GPU adds and neither figure counts: the CUDA context, the caching "
            "allocator's rounding and its reserve of freed blocks, cuBLAS and attention "
            "workspaces; the GPU run (`results/gpu.md`, NVML and torch's max allocated beside "
            "the estimate) checks them.")


def _below(mine: list[float], others: list[list[float]]) -> bool:
    """Every run of the focus below every run of each other entry."""
    return bool(mine) and bool(others) and all(max(mine) < min(o) for o in others if o)


def _measured_memory(entries, mine, focus: str) -> tuple[bool | None, list[str]]:
    """Claim 3 at the suite's own scale: live tensor memory recorded by the trials
    (MemTracker on a few steps), by category, RSS beside it."""
    timed = [e for e in entries if e.runs and e.metric("tensor_peak_mb")]
    if not timed or not mine.metric("tensor_peak_mb"):
        return None, []

    def category(e, name):
        values = [r.result().get("tensor_peak_by_category_mb", {}).get(name) for r in e.runs]
        values = [v for v in values if v is not None]
        return _fmt(statistics.fmean(values), 0) if values else "–"

    rows = [f"| {e.strategy} | {_fmt(e.mean('tensor_peak_mb'), 0)} | "
            + " | ".join(category(e, c) for c in MEMORY_CATEGORIES)
            + f" | {_fmt(e.mean('peak_memory_mb'), 0)} |" for e in timed]
    rivals = [e for e in timed if e.strategy in ("lora", "full-ft") and e is not mine]
    verdict = (_below(mine.metric("tensor_peak_mb"), [e.metric("tensor_peak_mb") for e in rivals])
               if rivals else None)
    lines = ["Measured: peak live tensor memory of a training step (MiB, mean over seeds; "
             "torch's MemTracker on the trial's 3rd and last steps), by category at the peak, "
             "the process's peak RSS beside it:", "",
             "| strategy | tensor peak | " + " | ".join(c.replace("_", " ") for c in MEMORY_CATEGORIES)
             + " | RSS peak |", "|---|" + "---:|" * (len(MEMORY_CATEGORIES) + 2), *rows, ""]
    if verdict is None:
        lines += ["No LoRA or full fine-tuning runs with tensor memory to judge against.", ""]
    return verdict, lines


def _estimated_memory(entries, focus: str, estimate: list[dict]) -> tuple[bool | None, list[str]]:
    """Claim 3 in the paper's setting: the committed fake-tensor estimate (results/memory)
    of every strategy of the suite."""
    wanted = {r.params.get("strategy") for e in entries for r in e.runs[:1]}
    rows = {r["strategy"]: r for r in estimate if r["strategy"] in wanted}
    if focus not in rows:
        return None, []
    gib = lambda b: f"{b / 2**30:.2f}"
    first = rows[focus]
    table = [f"| {name} | {gib(r['peak_bytes'])} | "
             + " | ".join(gib(r["categories"].get(c, 0)) for c in MEMORY_CATEGORIES)
             + f" | {r.get('peak_phase', '?')} |"
             for name, r in sorted(rows.items(), key=lambda kv: kv[1]["peak_bytes"])]
    rivals = [r for name, r in rows.items() if name in ("lora", "full-ft")]
    verdict = (all(first["peak_bytes"] < r["peak_bytes"] for r in rivals) if rivals else None)
    lighter = sorted(name for name, r in rows.items()
                     if name != focus and r["peak_bytes"] < first["peak_bytes"])
    lines = [f"Estimated, the paper's setting: {first['model']}, batch {first['batch_size']} x "
             f"{first['max_length']} tokens, {first['precision']} (fake tensors, "
             f"`results/memory.md`; GiB at the step's peak):", "",
             "| strategy | peak | " + " | ".join(c.replace("_", " ") for c in MEMORY_CATEGORIES)
             + " | peak in |", "|---|" + "---:|" * (len(MEMORY_CATEGORIES) + 1) + "---|", *table, "",
             f"Strategies of this suite under {focus}'s estimate: {', '.join(lighter) or 'none'}.", ""]
    return verdict, lines


def memory_claim(task: str, entries, focus: str,
                 estimate: list[dict] | None = None) -> tuple[str, list[str]]:
    """Claim 3: on a GPU from NVML; otherwise from tensor memory, measured at the suite's
    scale (trial files) and estimated at the paper's (`estimate`, results/memory): supported
    when the focus is below LoRA and full fine-tuning in every figure there is."""
    mine = _focus(entries, focus)
    if mine is None:
        return UNTESTABLE, [f"No {focus} runs on {task}."]
    sources = {r.tags.get("memory_source", "?") for e in entries for r in e.runs}
    if any(s.startswith("nvml") for s in sources):
        rows = [f"| {e.strategy} | {_fmt(e.mean('peak_memory_mb'), 0)} |" for e in entries if e.runs]
        others = [e for e in entries if e.strategy in ("lora", "full-ft") and e.runs]
        below = _below(mine.metric("peak_memory_mb"), [e.metric("peak_memory_mb") for e in others])
        return (SUPPORTED if below else NOT_SUPPORTED), [
            f"Peak GPU memory per strategy (MiB, mean over seeds; source: {', '.join(sorted(sources))}):",
            "", "| strategy | peak memory (MiB) |", "|---|---|", *rows, "",
            f"Rule: supported when every {focus} run peaks below every run of LoRA and full "
            "fine-tuning."]
    measured, measured_lines = _measured_memory(entries, mine, focus)
    estimated, estimated_lines = _estimated_memory(entries, focus, estimate or [])
    if not measured_lines:  # RSS only: shown, never judged (results/memory.md says why)
        measured_lines = [
            "Measured here: peak RSS only (MiB, mean over seeds; these trial files predate "
            "the tensor count), which also holds the libraries and the allocator's retained "
            "pages: shown, not judged.", "", "| strategy | peak RSS | trainable share |",
            "|---|---:|---:|",
            *[f"| {e.strategy} | {_fmt(e.mean('peak_memory_mb'), 0)} | "
              f"{_fmt(100 * e.mean('trainable_share') if e.mean('trainable_share') is not None else None, 2)}% |"
              for e in entries if e.runs], ""]
    lines = measured_lines + estimated_lines
    judged = [v for v in (measured, estimated) if v is not None]
    if not judged:
        return UNTESTABLE, lines + [
            "No tensor memory recorded and no estimate covering the focus: RSS does not "
            "answer the paper's claim about GPU memory. " + GPU_ADDS]
    said = [f"{where}: {'below' if v else 'not below'} both"
            for where, v in (("measured", measured), ("estimated at 8B", estimated)) if v is not None]
    lines += [f"{focus} against LoRA and full fine-tuning — {'; '.join(said)}.", "",
              GPU_ADDS, "",
              f"Rule: supported when {focus}'s tensor peak is below LoRA's and full "
              "fine-tuning's in every figure there is (every run measured here; the 8B "
              "estimate); the layer-wise baselines are shown, not part of the rule."]
    return (SUPPORTED if all(judged) else NOT_SUPPORTED), lines


def small_corpus_claim(entries, focus: str, task: str, rows: int | None,
                       full_rows: int | None,
                       statistics: str = PAIRED) -> tuple[str, list[str]]:
    mine = _focus(entries, focus)
    if mine is None:
        return UNTESTABLE, ["The small-corpus suite has no finished runs of the focus strategy."]
    majority = leaderboard.majority_f1(entries)
    above_floor = majority is not None and all(f > majority for f in mine.metric("test_macro_f1"))
    behind = []
    if statistics == HIERARCHICAL:  # every other entry, one Holm family
        judged, _ = _judged(mine, [e for e in entries if e is not mine and e.runs])
        behind = [v.baseline for v in judged if v.verdict == verdicts.BEHIND]
    mine_predictions = leaderboard.seed_predictions(mine)
    for e in entries if statistics == PAIRED else ():
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


def check_focus(records: list[RunRecord], focus: str, where: str, hint: str = "") -> None:
    """One line when no run is of the entry `focus` (a typo, or the wrong runs)."""
    import difflib

    entries = sorted({r.strategy for r in records if r.strategy})
    if focus in entries:
        return
    close = difflib.get_close_matches(focus, entries, n=1, cutoff=0.6)
    raise UserError(f"no runs of entry {focus!r} in {where}"
                    + (f" (did you mean {close[0]!r}?)" if close else "")
                    + f"; its entries: {', '.join(entries) or '(none)'}" + hint)


def render_claims(suite: str, records: list[RunRecord], source: RunSource, focus: str,
                  results_dir: Path, small: tuple[list[RunRecord], RunSource] | None = None,
                  command: str | None = None, out_dir: Path | None = None,
                  declared: dict[str, str] | None = None, statistics: str = PAIRED) -> Path:
    """Write claims.md under out_dir (default results_dir/<suite>) and return its path.
    `command` is the line that reproduces the card; `declared`: entry -> "layer-wise" or
    "other", for entries whose kind neither their class nor their files say; `statistics`:
    how gaps are tested (STATISTICS)."""
    board = leaderboard.collect(records)
    command = command or f"python -m benchmark claims --suite {suite} --focus {focus}"
    lines = [f"# Claims card: suite `{suite}`, focus `{focus}`", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M')} from {source.describe()}"
             + (f" and {small[1].describe()}" if small else "")
             + f" by `{command}`.", "",
             "The IR-Tuning abstract (Liu & Litman, EMNLP 2025) claims the method outperforms "
             "several layer-wise PEFT baselines, converges fast, uses little GPU memory and works "
             f"on small revision corpora. Each claim below is stated for `{focus}` and judged "
             "from this suite's runs alone. "
             + (f"Solid gap: paired bootstrap over test examples p < 0.05 and ahead on every "
                f"seed, of at least {leaderboard.SOLID_MIN_SEEDS}." if statistics == PAIRED
                else "Method: " + verdicts.method_text()), ""]
    if source.new_entries:
        lines += [f"A comparison (`run --only`): {', '.join(f'`{e}`' for e in source.new_entries)} "
                  "ran under the suite's settings and is judged against the committed runs it "
                  f"was ranked with. {NEW_MARK_NOTE}", ""]
    lines += leaderboard.cpu_lines(board)
    stem = Path(suite).stem
    small_board = leaderboard.collect(small[0]) if small is not None else {}
    base_suite = base_suite_name(stem)  # a comparison `revisions+my-method` -> `revisions`
    base = base_suite.removesuffix("-small")
    no_small_why = (f"This suite is the small-corpus companion of `{base}`: the claim is judged "
                    f"in `{base}`'s card, against its full-corpus runs."
                    if base != base_suite else
                    f"No small-corpus suite results were found (by default `{base_suite}-small`"
                    + (f", or its comparison `{base_suite}-small+{'+'.join(source.new_entries)}`"
                       if source.new_entries else "") + ").")
    estimate_file = results_dir / MEMORY_ESTIMATE
    estimate = json.loads(estimate_file.read_text()) if estimate_file.is_file() else None
    outcomes = []
    for task, entries in board.items():
        mine = _focus(entries, focus)
        dynamics = entry_dynamics(mine) if mine else None
        lines += [f"## {task}", ""]
        if dynamics:
            lines += [f"What {focus} trained: {dynamics.text()}.", ""]
        sections = [("1. Outperforms the layer-wise baselines",
                     accuracy_claim(task, entries, focus, declared, source, statistics)),
                    ("2. Converges fast", convergence_claim(task, entries, focus, declared)),
                    ("3. Uses little memory", memory_claim(task, entries, focus, estimate))]
        if task in small_board:
            small_entries = small_board[task]
            sections.append(("4. Works on small corpora", small_corpus_claim(
                small_entries, focus, task, _train_rows(small_entries), _train_rows(entries),
                statistics)))
        else:
            sections.append(("4. Works on small corpora", (UNTESTABLE, [no_small_why])))
        for title, (verdict, body) in sections:
            outcomes.append((task, title, verdict))
            lines += [f"### {title}: **{verdict}**", "", *body, ""]
        lines += _variants(entries, focus)
    lines += ["## Summary", "", "| task | claim | verdict |", "|---|---|---|",
              *[f"| {t} | {c} | {v} |" for t, c, v in outcomes], ""]
    out_dir = out_dir or results_dir / stem
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "claims.md"
    leaderboard.write_if_changed(path, "\n".join(lines))
    return path


def base_suite_name(suite: str) -> str:
    """The suite a comparison ran under: `revisions+my-method` -> `revisions`."""
    return suite.split("+", 1)[0]


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
