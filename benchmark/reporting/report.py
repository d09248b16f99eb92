"""`python -m benchmark report --suite S`: results/<suite>/report.md, the reproduction report.

It holds the leaderboard (with its significance column) and plots, test F1 per class, which
blocks the suite's focus strategy trained (heatmap and frequency per block), its paired
tests against every other strategy, and the suite's settings beside the IR-Tuning
reference implementation's. Everything is read from run records, like the leaderboard.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from . import leaderboard
from .plots import focus_slug, save
from .runs import NEW_MARK_NOTE, RunRecord, RunSource
from .selection import dynamics

# The IR-Tuning reference code's training setup (docs/ir-tuning.md), for the comparison table.
REFERENCE_SETTINGS = {
    "model": "decoder LLMs (its batch sizes go up to 13B)",
    "adapter": "LoRA r=32, alpha=64, dropout 0.05 on q, k, v, up, down",
    "learning rate": "2e-4, linear decay",
    "warm-up steps": "100",
    "weight decay": "0",
    "training length": "4 epochs",
    "batch size": "16 (8 for 13B)",
    "input": "the sentence pair, or an instruction prompt holding both sentences",
    "max length / padding": "256, every example padded to 256",
    "precision": "fp16",
    "seeds": "one (171)",
    "classification head": "never trained (adapter configured as a causal LM)",
    "which test score is reported": "logged every 10 steps, no rule for the step",
    "gradient norms": "read to the host per parameter (.item() in a hook)",
}


def render_report(suite: str, records: list[RunRecord], source: RunSource,
                  results_dir: Path = Path("results"), focus: str | None = None,
                  command: str | None = None, out_dir: Path | None = None) -> Path:
    """Write the leaderboard files and report.md under out_dir (default
    results_dir/<suite>); return report.md. `focus` is the strategy the report looks into
    (its selection and paired tests get sections): the suite's, or a comparison's new
    entry. `command` is the line that reproduces the report."""
    board = leaderboard.collect(records)
    out_dir = out_dir or results_dir / Path(suite).stem
    board_md = leaderboard.write_board(suite, board, source, results_dir, focus, out_dir=out_dir,
                                       records=records)
    command = command or f"python -m benchmark report --suite {suite}"
    title = _title(focus)
    traces = _focus_traces(board, focus)
    frequency_plot = _write_frequency_plot(traces, out_dir, focus)
    plots = ["f1_vs_memory.png", "f1_vs_time.png", "dev_f1_curves.png",
             *([f"{focus_slug(focus)}_selection.png"] if focus else [])]
    lines = [f"# Report: suite `{suite}`", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M')} from {source.describe()} by "
             f"`{command}`.", "",
             *([f"A comparison (`run --only`): this report looks into "
                f"{', '.join(f'`{e}`' for e in source.new_entries)}, ranked with the committed "
                f"runs. {NEW_MARK_NOTE}", ""] if source.new_entries else []),
             "## Leaderboard", "", *_demote(board_md), "",
             "## Plots", "",
             *[f"![{p[:-4].replace('_', ' ')}]({p})" for p in plots if (out_dir / p).exists()], "",
             "## Test F1 per class", "",
             "Mean over seeds of each strategy's chosen configuration.", "",
             *_per_class_tables(board, source),
             f"## {title}: which blocks it trained", "",
             *_selection_section(traces, frequency_plot, focus),
             f"## {title} against every other strategy", "",
             *_focus_tests(board, focus, source),
             "## Settings beside the reference implementation", "",
             *_settings_table(board, focus),
             "## What strategies spent besides training", "",
             *_strategy_stats(board), ""]
    path = out_dir / "report.md"
    leaderboard.write_if_changed(path, "\n".join(lines))
    return path


def _title(focus: str | None) -> str:
    """The focus strategy's display name (its class's `title`, e.g. IR-Tuning)."""
    if not focus:
        return "Focus strategy"
    from strategies import STRATEGIES

    return (STRATEGIES.get(focus).title or focus) if focus in STRATEGIES else focus


def _demote(markdown: str) -> list[str]:
    """The leaderboard inside the report: its title dropped, its headings one level down."""
    lines = markdown.splitlines()[1:]
    return [("#" + line) if line.startswith("## ") else line for line in lines]


def _per_class_tables(board, source: RunSource | None = None) -> list[str]:
    mark = source.mark if source else str
    lines = []
    for task, entries in board.items():
        classes = sorted({k[len("test_f1."):] for e in entries for r in e.runs
                          for k in r.metrics if k.startswith("test_f1.")})
        if not classes:
            continue
        lines += [f"### {task}", "", "| strategy | " + " | ".join(classes) + " |",
                  "|---|" + "---|" * len(classes)]
        for e in entries:
            if e.runs:
                lines.append(f"| {mark(e.strategy)} | " + " | ".join(
                    leaderboard._fmt(e.mean(f"test_f1.{c}"), 2) for c in classes) + " |")
        lines.append("")
    return lines


def selection_frequency(traces: list[list[str]]) -> list[float]:
    """Share of steps at which each block trained, pooled over the given runs' traces."""
    rows = [row for trace in traces for row in trace]
    if not rows:
        return []
    return [sum(row[i] == "1" for row in rows) / len(rows) for i in range(len(rows[0]))]


def _focus_traces(board, focus: str | None) -> dict[str, list[list[str]]]:
    return {task: [t for t in (r.selection_trace() for r in e.runs) if t]
            for task, entries in board.items() for e in entries
            if focus and e.strategy == focus and e.runs}


def _write_frequency_plot(traces: dict[str, list[list[str]]], out_dir: Path,
                          focus: str | None) -> str | None:
    frequencies = {task: selection_frequency(t) for task, t in traces.items()}
    frequencies = {task: f for task, f in frequencies.items() if f}
    if not frequencies:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(frequencies), 1, figsize=(9, 1.5 + 2 * len(frequencies)),
                             squeeze=False)
    for ax, (task, frequency) in zip(axes[:, 0], frequencies.items()):
        ax.bar(range(len(frequency)), [100 * f for f in frequency], color="0.3")
        ax.set(title=f"{_title(focus)}: share of steps each block trained ({task})",
               xlabel="block", ylabel="% of steps", ylim=(0, 100))
    name = f"{focus_slug(focus)}_frequency.png"
    save(fig, out_dir / name)
    return name


def _selection_section(traces: dict[str, list[list[str]]], frequency_plot: str | None,
                       focus: str | None) -> list[str]:
    title = _title(focus)
    if not any(traces.values()):
        return [f"No {title} runs with a selection trace.", ""]
    lines = ["The heatmap shows the first seed's run (dark: trained at that step); the table "
             "pools every seed of the chosen configuration.", "",
             f"![{title} selection]({focus_slug(focus)}_selection.png)", ""]
    if frequency_plot:
        lines += [f"![{title} selection frequency]({frequency_plot})", ""]
    for task, task_traces in traces.items():
        frequency = selection_frequency(task_traces)
        if not frequency:
            continue
        found = dynamics(task_traces)
        steps = sum(len(trace) for trace in task_traces)
        lines += [f"### {task}", "",
                  f"{found.runs} run(s), {steps} steps; "
                  f"{found.mean_per_step:.1f} of {found.blocks} blocks trained per step "
                  f"on average (min {found.fewest}, max {found.most}).", "",
                  "| block | " + " | ".join(str(i) for i in range(len(frequency))) + " |",
                  "|---|" + "---|" * len(frequency),
                  "| % of steps | " + " | ".join(f"{100 * f:.0f}" for f in frequency) + " |", ""]
    return lines


def _focus_tests(board, focus: str | None, source: RunSource | None = None) -> list[str]:
    t = _title(focus)
    mark = source.mark if source else str
    lines = [f"Gap = {t}'s seed-mean test macro F1 minus the other's; p = share of paired "
             "bootstrap resamples of the test set in which the other strategy scored at least "
             f"as well as {t} (small p: {t}'s lead does not hinge on the test "
             "examples; p near 1: the other strategy is ahead). Seeds won: seeds on which "
             f"{t} alone scored higher. A verdict needs both: p < 0.05 (or > 0.95) and "
             f"every seed going the same way, of at least {leaderboard.SOLID_MIN_SEEDS}.", "",
             f"| task | other strategy | gap | p | seeds won by {t} | verdict |",
             "|---|---|---|---|---|---|"]
    rows = 0
    for task, entries in board.items():
        ir = next((e for e in entries if focus and e.strategy == focus and e.runs), None)
        if ir is None:
            continue
        ir_predictions = leaderboard.seed_predictions(ir)
        for e in entries:
            if e is ir or not e.runs:
                continue
            test = leaderboard.compare(ir_predictions, leaderboard.seed_predictions(e))
            if test is None:
                lines.append(f"| {task} | {mark(e.strategy)} | – | – | – | no paired test predictions |")
                continue
            won, seeds = test["seeds_won"], test["seeds"]
            verdict = (f"{t} better" if leaderboard.solid(test) else
                       f"{e.strategy} better" if leaderboard.solid(test, reverse=True)
                       else "no clear gap")
            lines.append(f"| {task} | {mark(e.strategy)} | {test['gap']:+.3f} | {leaderboard.p_text(test['p_value'])} "
                         f"| {won}/{seeds} | {verdict} |")
            rows += 1
    return lines + [""] if rows or len(lines) > 4 else [f"No {t} runs to compare.", ""]


def _strategy_stats(board) -> list[str]:
    """Extra work a strategy reports (e.g. IST's probe forwards), mean over seeds, beside
    the trial's training time."""
    lines = ["| task | strategy | extra forward passes | probes | their time (s) | training time (s) "
             "| share of training time |", "|---|---|---|---|---|---|---|"]
    for task, entries in board.items():
        for e in entries:
            stats = [r.result().get("strategy_stats") or {} for r in e.runs]
            seconds = [s["probe_seconds"] for s in stats if "probe_seconds" in s]
            if not seconds:
                continue
            forwards = statistics.fmean(s.get("probe_forward_passes", 0) for s in stats)
            probes = statistics.fmean(s.get("probes", 0) for s in stats)
            train = e.mean("train_time_s") or 0.0
            probe_s = statistics.fmean(seconds)
            share = f"{100 * probe_s / train:.1f}%" if train else "–"
            lines.append(f"| {task} | {e.strategy} | {forwards:.0f} | {probes:.0f} | {probe_s:.1f} "
                         f"| {train:.0f} | {share} |")
    if len(lines) == 2:
        return ["No strategy in this suite reports extra work.", ""]
    return ["The probe forwards run inside the training steps, so their time is part of the "
            "training time too.", "", *lines, ""]


def _settings_table(board, focus: str | None) -> list[str]:
    ir = next((e for entries in board.values() for e in entries
               if focus and e.strategy == focus and e.runs), None)
    if ir is None:
        return [f"No {_title(focus)} run to compare with the reference settings.", ""]
    params = ir.runs[0].params
    result = ir.runs[0].result()
    train_rows = result.get("sizes", {}).get("train")
    steps, batch = int(params.get("config.max_steps", 0)), int(params.get("config.batch_size", 0))
    epochs = f" ({steps * batch / train_rows:.2f} epoch of {ir.task})" if train_rows else ""
    adapter = params.get("opt.adapter", "lora")
    ours = {
        "model": params.get("model", "?"),
        "adapter": ("LoRA r={}, alpha={}, dropout {} on {}".format(
            params.get("opt.lora_r", 32), params.get("opt.lora_alpha", 64),
            params.get("opt.lora_dropout", 0.05), params.get("opt.target_modules", "every linear layer"))
            if adapter == "lora" else "none: whole blocks train"),
        "learning rate": f"{params.get('config.lr', '?')} "
                         f"({'dev-selected' if ir.candidates else 'set by the suite'}), linear decay",
        "warm-up steps": params.get("config.warmup_steps", "?"),
        "weight decay": params.get("config.weight_decay", "?"),
        "training length": f"{steps} steps{epochs}",
        "batch size": str(batch),
        "input": {"diff": "the revised sentence with the edit marked ([ deleted ] { inserted })",
                  "pair": "the sentence pair", "instruction": "the instruction prompt"}.get(
                      params.get("config.input_format", "?"), params.get("config.input_format", "?")),
        "max length / padding": f"{params.get('config.max_length', '?')}, padded per batch to its longest",
        "precision": params.get("config.precision", "?"),
        "seeds": ", ".join(sorted({r.params.get("seed", "?") for r in ir.runs})),
        "classification head": "trained at every step, lr " + (
            params.get("config.head_lr") if params.get("config.head_lr") not in (None, "None")
            else "as the body's"),
        "which test score is reported": (
            "test once, at the best dev step"
            if any(len(r.result().get("history") or []) > 1 for r in ir.runs)
            else "test once, at the end of training (its one dev evaluation)"),
        "gradient norms": "summed on the device, read once per step",
    }
    return [f"| setting | reference (IR-Tuning code) | this suite ({_title(focus)}'s chosen run) |",
            "|---|---|---|",
            *[f"| {k} | {v} | {ours[k]} |" for k, v in REFERENCE_SETTINGS.items()], ""]
