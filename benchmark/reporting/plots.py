"""The leaderboard's plots: test F1 against memory and against training time (Pareto
views), dev F1 curves, and the blocks the suite's focus strategy trained at each step."""

from __future__ import annotations

from pathlib import Path

from . import convergence


def focus_slug(focus: str) -> str:
    """A strategy name as it appears in file names: ir-tuning -> ir_tuning."""
    return focus.replace("-", "_")


def write_plots(board: dict, out_dir: Path, focus: str | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    tasks = list(board)
    if not tasks:
        return paths
    # 1. Pareto views, as peft's method_comparison shows them: test F1 against peak memory
    # (live tensor memory where every run recorded it, else peak RSS) and training time.
    paths.append(_pareto(board, tasks, _memory_axis(board), out_dir / "f1_vs_memory.png"))
    paths.append(_pareto(board, tasks, ("train_time_s", "training time (s; one CPU's runs "
                                        "compare)"), out_dir / "f1_vs_time.png"))
    # 2. dev F1 over steps: the learning curve's seed mean where runs recorded one (with
    # the task's target), else the first seed's dev evaluations
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        target = convergence.task_target(board[task])
        for e in board[task]:
            if e.runs:
                points = _mean_curve(e) if target else e.runs[0].dev_curve()
                if points:
                    ax.plot(*zip(*points), marker=".", label=e.strategy)
        if target:
            ax.axhline(target.value, color="0.5", linestyle="--", linewidth=1, label="target")
        ax.set(title=task, xlabel="step", ylabel=(f"dev-subset macro F1 ({target.rows} rows, seed mean)"
                                                  if target else "dev macro F1"))
        ax.legend(fontsize=8)
    paths.append(save(fig, out_dir / "dev_f1_curves.png"))
    # 3. which blocks the focus strategy trained at which step
    traces = []
    for task in tasks:
        for e in board[task]:
            if focus and e.strategy == focus and e.runs:
                trace = e.runs[0].selection_trace()
                if trace:
                    traces.append((task, trace))
    if traces:
        fig, axes = plt.subplots(len(traces), 1, figsize=(9, 2 + 1.2 * len(traces)), squeeze=False)
        for ax, (task, trace) in zip(axes[:, 0], traces):
            matrix = [[int(c) for c in row] for row in trace]
            ax.imshow(list(map(list, zip(*matrix))), aspect="auto", cmap="Greys",
                      interpolation="nearest", origin="lower")
            ax.set(title=f"{focus}: blocks trained per step, {task}", xlabel="step", ylabel="block")
        paths.append(save(fig, out_dir / f"{focus_slug(focus)}_selection.png"))
    return paths


def _memory_axis(board: dict) -> tuple[str, str]:
    runs = [r for es in board.values() for e in es for r in e.runs]
    if runs and all("tensor_peak_mb" in r.metrics for r in runs):
        return "tensor_peak_mb", "peak tensor memory (MiB)"
    return "peak_memory_mb", "peak memory (MiB; RSS on a CPU)"


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points no other point beats on both axes (lower x, higher y), by x."""
    front, best = [], float("-inf")
    for x, y, name in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y, name))
            best = y
    return front


def _pareto(board: dict, tasks: list[str], axis: tuple[str, str], path: Path) -> Path:
    import matplotlib.pyplot as plt

    metric, label = axis
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        points = []
        for e in board[task]:
            x, y = (e.mean(metric), e.mean("test_macro_f1")) if e.runs else (None, None)
            if x is None or y is None:
                continue
            ax.errorbar(x, y, yerr=e.std("test_macro_f1"), fmt="o", capsize=3, label=e.strategy)
            points.append((x, y, e.strategy))
        front = pareto_front(points)
        if len(front) > 1:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.6",
                    linestyle=":", linewidth=1, label="Pareto front")
        ax.set(title=task, xlabel=label, ylabel="test macro F1")
        ax.legend(fontsize=8)
    return save(fig, path)


def _mean_curve(entry) -> list[tuple[int, float]]:
    """The learning curve averaged over the entry's runs, at the steps all of them share."""
    curves = [{p["step"]: p["macro_f1"] for p in convergence.curve(r)} for r in entry.runs]
    curves = [c for c in curves if c]
    if not curves:
        return []
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return [(s, sum(c[s] for c in curves) / len(curves)) for s in steps]


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
