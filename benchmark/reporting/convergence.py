"""Time to target, as MLPerf's time-to-train: the first evaluated step (and the training
seconds up to it) at which a run's learning curve reaches a quality target fixed per task.

The learning curve is the dev-subset macro F1 that trials record every `curve_every` steps
(`result["curve"]`). The target of a task is `TARGET_SHARE` of the best entry's final
mean curve F1 (the mean over its seeds of the curve's last point): every strategy is
timed to the same bar, and a run that never reaches it says so. Seconds are training
seconds (evaluation excluded), so evaluating more often does not make a strategy slower;
on a CPU they are the trial process's CPU seconds (one thread per trial), which other work
on the machine does not inflate as it does wall time.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

TARGET_SHARE = 0.9


@dataclass(frozen=True)
class Target:
    value: float  # the macro F1 to reach
    leader: str  # the entry whose final mean set it
    leader_final: float
    rows: int  # rows of the dev subset
    every: int | None  # steps between curve points


@dataclass(frozen=True)
class Reached:
    """Where a run first reached the target (None fields: it never did)."""
    step: int | None
    train_seconds: float | None
    last_step: int  # the run's last curve point


def curve(run) -> list[dict]:
    return run.result().get("curve") or []


def final_curve_f1(entry) -> float | None:
    """Mean over the entry's runs of their curve's last point."""
    finals = [points[-1]["macro_f1"] for points in map(curve, entry.runs) if points]
    return statistics.fmean(finals) if finals else None


def task_target(entries, share: float = TARGET_SHARE) -> Target | None:
    """The task's target, or None when no run recorded a learning curve."""
    finals = {e.strategy: f for e in entries if e.runs
              for f in [final_curve_f1(e)] if f is not None}
    if not finals:
        return None
    leader = max(finals, key=finals.get)
    sample = next(r for e in entries for r in e.runs if curve(r))
    steps = [p["step"] for p in curve(sample)]
    every = steps[1] - steps[0] if len(steps) > 1 else None
    return Target(share * finals[leader], leader, finals[leader],
                  int(sample.result().get("curve_rows", 0)), every)


def reached(run, target: float) -> Reached | None:
    """None for a run without a curve."""
    points = curve(run)
    if not points:
        return None
    on_cpu = str(run.result().get("config", {}).get("device", "cpu")).startswith("cpu")
    for point in points:
        if point["macro_f1"] >= target:
            seconds = point.get("train_cpu_s") if on_cpu else None
            return Reached(point["step"], seconds if seconds is not None else point["train_time_s"],
                           points[-1]["step"])
    return Reached(None, None, points[-1]["step"])


@dataclass(frozen=True)
class EntryTime:
    """An entry's runs against the target: how many reached it and their mean cost."""
    runs: int
    reached: int
    mean_step: float | None
    mean_seconds: float | None
    steps: list[int | None]

    def text(self, seconds: bool = False) -> str:
        value = self.mean_seconds if seconds else self.mean_step
        if not self.reached:
            return f"not reached (0/{self.runs})"
        return f"{value:.0f} ({self.reached}/{self.runs})"


def entry_time(entry, target: Target) -> EntryTime | None:
    marks = [m for m in (reached(r, target.value) for r in entry.runs) if m is not None]
    if not marks:
        return None
    hits = [m for m in marks if m.step is not None]
    return EntryTime(len(marks), len(hits),
                     statistics.fmean(m.step for m in hits) if hits else None,
                     statistics.fmean(m.train_seconds for m in hits) if hits else None,
                     [m.step for m in marks])


def target_line(target: Target) -> str:
    every = f", evaluated every {target.every} steps" if target.every else ""
    return (f"Steps and seconds to target: the first curve point at which a run's macro F1 on a "
            f"fixed dev subset ({target.rows} rows{every}) reaches {target.value:.3f}, "
            f"{TARGET_SHARE:.0%} of the best final mean ({target.leader}, {target.leader_final:.3f}); "
            "seconds are training seconds up to that point (evaluation excluded; on a CPU the "
            "CPU seconds of the trial's process, which other work on the machine does not "
            "inflate); mean over the runs that reached it, (k/n) runs reached it.")
