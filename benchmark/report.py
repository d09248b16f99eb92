"""`python -m benchmark report --suite S`: results/<suite>/report.md, the reproduction report.

It holds the leaderboard (with its significance column) and plots, test F1 per class, which
blocks IR-Tuning trained (heatmap and frequency per block), IR-Tuning's paired tests against
every other strategy, and the suite's settings beside the reference implementation's.
Everything is read from MLflow, like the leaderboard.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from . import leaderboard

# The IR-Tuning reference code's training setup (docs/ir-tuning.md), for the comparison table.
REFERENCE_SETTINGS = {
    "model": "decoder LLMs (its batch sizes go up to 13B)",
    "adapter": "LoRA r=32, alpha=64, dropout 0.05 on q, k, v, up, down",
    "learning rate": "2e-4, linear decay",
    "warm-up steps": "100",
    "weight decay": "0",
    "training length": "4 epochs",
    "batch size": "16 (8 for 13B)",
    "max length / padding": "256, every example padded to 256",
    "precision": "fp16",
    "seeds": "one (171)",
    "classification head": "never trained (adapter configured as a causal LM)",
    "which test score is reported": "logged every 10 steps, no rule for the step",
    "gradient norms": "read to the host per parameter (.item() in a hook)",
}


def render_report(suite: str, tracking_uri: str, results_dir: Path = Path("results")) -> Path:
    """Write the leaderboard files and report.md under results_dir/<suite>; return report.md."""
    client, board = leaderboard.open_board(suite, tracking_uri)
    board_md = leaderboard.write_board(suite, client, board, tracking_uri, results_dir)
    out_dir = results_dir / Path(suite).stem
    traces = _ir_tuning_traces(client, board)
    frequency_plot = _write_frequency_plot(traces, out_dir)
    plots = ["f1_vs_memory.png", "dev_f1_curves.png", "ir_tuning_selection.png"]
    lines = [f"# Report: suite `{suite}`", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M')} from MLflow `{tracking_uri}` by "
             f"`python -m benchmark report --suite {suite}`.", "",
             "## Leaderboard", "", *_demote(board_md), "",
             "## Plots", "",
             *[f"![{p[:-4].replace('_', ' ')}]({p})" for p in plots if (out_dir / p).exists()], "",
             "## Test F1 per class", "",
             "Mean over seeds of each strategy's chosen configuration.", "",
             *_per_class_tables(board),
             "## IR-Tuning: which blocks it trained", "",
             *_selection_section(traces, frequency_plot),
             "## IR-Tuning against every other strategy", "",
             *_ir_tuning_tests(client, board),
             "## Settings beside the reference implementation", "",
             *_settings_table(client, board), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _demote(markdown: str) -> list[str]:
    """The leaderboard inside the report: its title dropped, its headings one level down."""
    lines = markdown.splitlines()[1:]
    return [("#" + line) if line.startswith("## ") else line for line in lines]


def _per_class_tables(board) -> list[str]:
    lines = []
    for task, entries in board.items():
        classes = sorted({k[len("test_f1."):] for e in entries for r in e.runs
                          for k in r.data.metrics if k.startswith("test_f1.")})
        if not classes:
            continue
        lines += [f"### {task}", "", "| strategy | " + " | ".join(classes) + " |",
                  "|---|" + "---|" * len(classes)]
        for e in entries:
            if e.runs:
                lines.append(f"| {e.strategy} | " + " | ".join(
                    leaderboard._fmt(e.mean(f"test_f1.{c}"), 2) for c in classes) + " |")
        lines.append("")
    return lines


def selection_frequency(traces: list[list[str]]) -> list[float]:
    """Share of steps at which each block trained, pooled over the given runs' traces."""
    rows = [row for trace in traces for row in trace]
    if not rows:
        return []
    return [sum(row[i] == "1" for row in rows) / len(rows) for i in range(len(rows[0]))]


def _ir_tuning_traces(client, board) -> dict[str, list[list[str]]]:
    return {task: [t for t in (leaderboard.selection_trace(client, r.info.run_id) for r in e.runs) if t]
            for task, entries in board.items() for e in entries
            if e.strategy == "ir-tuning" and e.runs}


def _write_frequency_plot(traces: dict[str, list[list[str]]], out_dir: Path) -> str | None:
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
        ax.set(title=f"IR-Tuning: share of steps each block trained ({task})",
               xlabel="block", ylabel="% of steps", ylim=(0, 100))
    leaderboard._save(fig, out_dir / "ir_tuning_frequency.png")
    return "ir_tuning_frequency.png"


def _selection_section(traces: dict[str, list[list[str]]], frequency_plot: str | None) -> list[str]:
    if not any(traces.values()):
        return ["No IR-Tuning runs with a selection trace.", ""]
    lines = ["The heatmap shows the first seed's run (dark: trained at that step); the table "
             "pools every seed of the chosen configuration.", "",
             "![IR-Tuning selection](ir_tuning_selection.png)", ""]
    if frequency_plot:
        lines += [f"![IR-Tuning selection frequency]({frequency_plot})", ""]
    for task, task_traces in traces.items():
        frequency = selection_frequency(task_traces)
        if not frequency:
            continue
        per_step = [row.count("1") for trace in task_traces for row in trace]
        lines += [f"### {task}", "",
                  f"{len(task_traces)} run(s), {len(per_step)} steps; "
                  f"{statistics.fmean(per_step):.1f} of {len(frequency)} blocks trained per step "
                  f"on average (min {min(per_step)}, max {max(per_step)}).", "",
                  "| block | " + " | ".join(str(i) for i in range(len(frequency))) + " |",
                  "|---|" + "---|" * len(frequency),
                  "| % of steps | " + " | ".join(f"{100 * f:.0f}" for f in frequency) + " |", ""]
    return lines


def _ir_tuning_tests(client, board) -> list[str]:
    lines = ["Gap = IR-Tuning's seed-mean test macro F1 minus the other's; p = share of paired "
             "bootstrap resamples of the test set in which the other strategy scored at least "
             "as well as IR-Tuning (small p: IR-Tuning's lead does not hinge on the test "
             "examples; p near 1: the other strategy is ahead). Seeds won: seeds on which "
             "IR-Tuning alone scored higher. A verdict needs both: p < 0.05 (or > 0.95) and "
             "every seed going the same way.", "",
             "| task | other strategy | gap | p | seeds won by IR-Tuning | verdict |",
             "|---|---|---|---|---|---|"]
    rows = 0
    for task, entries in board.items():
        ir = next((e for e in entries if e.strategy == "ir-tuning" and e.runs), None)
        if ir is None:
            continue
        ir_predictions = leaderboard.seed_predictions(client, ir)
        for e in entries:
            if e is ir or not e.runs:
                continue
            test = leaderboard.compare(ir_predictions, leaderboard.seed_predictions(client, e))
            if test is None:
                lines.append(f"| {task} | {e.strategy} | – | – | – | no paired test predictions |")
                continue
            won, seeds = test["seeds_won"], test["seeds"]
            verdict = ("IR-Tuning better" if test["p_value"] < 0.05 and won == seeds else
                       f"{e.strategy} better" if test["p_value"] > 0.95 and test["seeds_lost"] == seeds
                       else "no clear gap")
            lines.append(f"| {task} | {e.strategy} | {test['gap']:+.3f} | {test['p_value']:.3f} "
                         f"| {won}/{seeds} | {verdict} |")
            rows += 1
    return lines + [""] if rows or len(lines) > 4 else ["No IR-Tuning runs to compare.", ""]


def _settings_table(client, board) -> list[str]:
    ir = next((e for entries in board.values() for e in entries
               if e.strategy == "ir-tuning" and e.runs), None)
    if ir is None:
        return ["No IR-Tuning run to compare with the reference settings.", ""]
    params = ir.runs[0].data.params
    result = leaderboard.run_result(client, ir.runs[0].info.run_id)
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
        "learning rate": f"{params.get('config.lr', '?')} (dev-selected), linear decay",
        "warm-up steps": params.get("config.warmup_steps", "?"),
        "weight decay": params.get("config.weight_decay", "?"),
        "training length": f"{steps} steps{epochs}",
        "batch size": str(batch),
        "max length / padding": f"{params.get('config.max_length', '?')}, padded per batch to its longest",
        "precision": params.get("config.precision", "?"),
        "seeds": ", ".join(sorted({r.data.params.get("seed", "?") for r in ir.runs})),
        "classification head": "trained at every step",
        "which test score is reported": "test once, at the best dev step",
        "gradient norms": "summed on the device, read once per step",
    }
    return ["| setting | reference (IR-Tuning code) | this suite (IR-Tuning's chosen run) |",
            "|---|---|---|",
            *[f"| {k} | {v} | {ours[k]} |" for k, v in REFERENCE_SETTINGS.items()], ""]
