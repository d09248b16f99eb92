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


# -- the budget rule (issue 30): a budget at which the curves have flattened ------------------

BUDGET_RULE_GAIN = 0.01  # at most this gain of the mean dev curve ...
BUDGET_RULE_SHARE = 0.25  # ... over this last share of the budget


@dataclass(frozen=True)
class EndGain:
    """A strategy's mean curve at the end of a budget: the mean of its points in the last
    `share` of the budget (`end`) against the mean of its points in the `share` before that
    (`start`), steps `start_step` to `end_step`. Window means, not two points: a single
    seed's dev points move by +-0.03 between evaluations once flat (the probe's curves)."""
    strategy: str
    runs: int
    start_step: int
    end_step: int
    start: float
    end: float

    @property
    def gain(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class BudgetRule:
    """The rule applied to committed curves: `budget`, the shortest curve step from which on
    every strategy's mean curve gains less than `max_gain` at every budget (last `share`
    against the `share` before it; None: not even the curves' full length passes); `gains`
    at that budget, `at_full` at the curves' full length (`full`), each strategy's end slope
    for the card."""
    budget: int | None
    full: int
    max_gain: float
    share: float
    gains: dict[str, EndGain]
    at_full: dict[str, EndGain]

    def text(self) -> str:
        rule = (f"each strategy's mean dev curve, averaged over the last {self.share:.0%} of the "
                f"budget, is less than {self.max_gain:g} above its average over the {self.share:.0%} "
                "before, at that budget and every longer one")
        ends = "; ".join(f"{g.strategy} {g.gain:+.3f} (steps {g.start_step}-{g.end_step}, "
                         f"{g.runs} run{'s' * (g.runs != 1)})" for g in self.at_full.values())
        if self.budget is None:
            return f"Budget rule ({rule}): not met within {self.full} steps. Gains: {ends}."
        return (f"Budget rule ({rule}): met at {self.budget} of {self.full} steps (read off "
                f"curves whose learning-rate schedule spans all {self.full}). Gains at all "
                f"{self.full}: {ends}.")


def mean_curve(curves: list[list[dict]]) -> list[tuple[int, float]]:
    """(step, mean macro F1) at the steps every run's curve has."""
    curves = [c for c in curves if c]
    if not curves:
        return []
    steps = set.intersection(*({p["step"] for p in c} for c in curves))
    by_step = [{p["step"]: p["macro_f1"] for p in c} for c in curves]
    return [(s, statistics.fmean(c[s] for c in by_step)) for s in sorted(steps)]


def end_gain(strategy: str, runs: int, points: list[tuple[int, float]], budget: int,
             share: float = BUDGET_RULE_SHARE) -> EndGain | None:
    """The mean curve's last `share` of `budget` against the `share` before it, each the mean
    of its points (None: a window without a point)."""
    end = [p for p in points if (1 - share) * budget < p[0] <= budget]
    start = [p for p in points if (1 - 2 * share) * budget < p[0] <= (1 - share) * budget]
    if not end or not start:
        return None
    return EndGain(strategy, runs, start[0][0], end[-1][0],
                   statistics.fmean(v for _, v in start), statistics.fmean(v for _, v in end))


def budget_rule(curves: dict[str, list[list[dict]]], max_gain: float = BUDGET_RULE_GAIN,
                share: float = BUDGET_RULE_SHARE) -> BudgetRule | None:
    """Issue 30's rule on committed learning curves (strategy -> its runs' `curve` points,
    e.g. a probe's trial files): the shortest budget, among the curve steps all strategies
    share, from which on (that budget and every longer one) every strategy's mean curve
    gains less than `max_gain` (`end_gain`). A shorter budget is read off the longer run's
    curve, whose learning rate had not decayed there yet: the suite then trains that budget
    with its own schedule. None when no strategy has a curve."""
    means = {s: (len([c for c in runs if c]), mean_curve(runs)) for s, runs in curves.items()}
    means = {s: m for s, m in means.items() if m[1]}
    if not means:
        return None
    steps = sorted(set.intersection(*({p[0] for p in m[1]} for m in means.values())))
    full = steps[-1]

    def gains_at(budget: int) -> dict[str, EndGain] | None:
        found = {s: end_gain(s, n, points, budget, share) for s, (n, points) in means.items()}
        return None if any(g is None for g in found.values()) else found

    gains = {budget: gains_at(budget) for budget in steps}
    at_full = gains[full] or {}
    # Walk back from the full length while every budget passes: the last one reached is
    # the shortest from which on all of them do.
    budget = None
    for step in reversed(steps):
        if not gains[step] or any(g.gain >= max_gain for g in gains[step].values()):
            break
        budget = step
    if budget is None:
        return BudgetRule(None, full, max_gain, share, at_full, at_full)
    return BudgetRule(budget, full, max_gain, share, gains[budget], at_full)


def entries_budget_rule(entries, max_gain: float = BUDGET_RULE_GAIN,
                        share: float = BUDGET_RULE_SHARE) -> BudgetRule | None:
    """`budget_rule` on one task's leaderboard entries (their runs' curves)."""
    return budget_rule({e.strategy: [curve(r) for r in e.runs] for e in entries},
                       max_gain, share)
