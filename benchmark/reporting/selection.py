"""What layer-wise strategies actually trained, read from their selection traces (one string
per step, a character per block: '1' trained): blocks per step, how often the set changed,
and the step of its last change."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Dynamics:
    runs: int
    blocks: int  # blocks in the model
    mean_per_step: float
    fewest: int
    most: int
    change_share: float  # share of steps (after the first) whose set differs from the last step's
    last_change: float  # mean over runs of the last step at which the set changed (1-based)

    def text(self) -> str:
        spread = f"{self.fewest}" if self.fewest == self.most else f"{self.fewest}-{self.most}"
        return (f"{spread} of {self.blocks} blocks per step (mean {self.mean_per_step:.1f}), "
                f"set changed on {100 * self.change_share:.0f}% of steps, last change at step "
                f"{self.last_change:.0f} on average")


def dynamics(traces: list[list[str]]) -> Dynamics | None:
    traces = [t for t in traces if t]
    if not traces:
        return None
    per_step = [row.count("1") for trace in traces for row in trace]
    changes, last_changes = [], []
    for trace in traces:
        flips = [i + 1 for i in range(1, len(trace)) if trace[i] != trace[i - 1]]
        changes.append(len(flips) / max(1, len(trace) - 1))
        last_changes.append(flips[-1] if flips else 1)
    return Dynamics(len(traces), len(traces[0][0]), statistics.fmean(per_step), min(per_step),
                    max(per_step), statistics.fmean(changes), statistics.fmean(last_changes))


def entry_dynamics(entry) -> Dynamics | None:
    return dynamics([r.selection_trace() for r in entry.runs])


def selection_lines(entries) -> list[str]:
    """One line per layer-wise entry of a task; the split's reach for IR-Tuning-like runs."""
    lines = []
    for e in entries:
        found = entry_dynamics(e) if e.runs else None
        if found is not None:
            reach = _split_reach(e.runs[0].params, found.blocks)
            lines.append(f"{e.strategy}: {found.text()}{reach}.")
    if not lines:
        return []
    return ["Blocks trained (from the selection traces, every seed): " + " ".join(lines)]


def _split_reach(params: dict[str, str], blocks: int) -> str:
    """For IR-Tuning: how many blocks its split can keep at all, out of this model's."""
    if params.get("strategy") != "ir-tuning":
        return ""
    from strategies.ir_tuning import split_keep_range

    metric = params.get("opt.metric", "gradient")
    splits = int(params.get("opt.split_num", 1))
    fewest, most = split_keep_range(blocks, splits=splits, metric=metric)
    return f" (its split can keep {fewest}-{most} of {blocks})"
