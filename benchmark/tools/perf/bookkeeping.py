"""IR-Tuning's bookkeeping cost: the time its gradient scores and split add to a step.

Three variants train the same blocks at every step, from the same initial weights on the
same batches, so only the bookkeeping differs:
- `ir-tuning`: this suite's tracker (norms summed on the device, one host read per step);
- `random-layers` replaying IR-Tuning's selection (no scoring at all);
- `ir-tuning, reference tracker`: a hook per parameter that reads its gradient norm to the
  host with `.item()`, as the reference code does (one device sync per parameter).
Rounds alternate the variants so that drifts in machine load hit all of them alike.

    python -m benchmark.tools.perf.bookkeeping --models minilm tiny-llama --steps 30 --rounds 3
"""

from __future__ import annotations

import math
import statistics
import time

from strategies.ir_tuning import INITIAL_SCORE, IRTuning, IRTuningConfig
from strategies.random_layers import RandomLayers, RandomLayersConfig

from ...trial.config import resolve_device
from ...trial.models import DEFAULT_MODEL
from .common import (base_parser, encoded_task, fixed_batches, machine, median_after_warmup,
                     prepared, run_main, table, timed_steps)

GOAL_OVER_RANDOM = 0.03  # the goal: at most 3% over random-layers


class ReplayedLayers(RandomLayers):
    """random-layers forced to train the blocks another run chose, step by step."""

    def __init__(self, trace: list[list[int]], seed: int = 0):
        super().__init__(RandomLayersConfig(), seed)
        self.trace = trace

    def choose(self, step: int) -> list[int]:
        return self.trace[step]


class ReferenceTrackerIRTuning(IRTuning):
    """IR-Tuning scored the reference way: a hook per parameter, `.item()` per gradient."""

    def prepare(self, model):
        model = super().prepare(model)
        self._host_norms: dict[int, tuple[int, float]] = {}
        for i, params in enumerate(self.block_params):
            for p in params:
                p.register_hook(self._norm_hook(i, id(p)))
        return model

    def _norm_hook(self, block: int, key: int):
        def hook(grad):
            started = time.perf_counter()
            self._host_norms[key] = (block, grad.norm().item())  # a device sync per parameter
            self.hook_seconds += time.perf_counter() - started
        return hook

    hook_seconds = 0.0

    def _update_gradient_scores(self) -> None:
        totals: dict[int, float] = {}
        for block, norm in self._host_norms.values():
            norm = norm if math.isfinite(norm) else INITIAL_SCORE
            totals[block] = totals.get(block, 0.0) + math.sqrt(norm)
        for block, total in totals.items():
            self.scores[block] = math.sqrt(total)
        self._host_norms.clear()


def timed_bookkeeping(strategy: IRTuning) -> dict[str, float]:
    """Wrap the strategy's scoring (after backward) and split (choose) with a timer: the
    bookkeeping measured directly, not as a difference of two noisy step times."""
    spent = {"seconds": 0.0}
    for name in ("after_backward", "choose"):
        original = getattr(strategy, name)

        def timed(step, _original=original):
            started = time.perf_counter()
            try:
                return _original(step)
            finally:
                spent["seconds"] += time.perf_counter() - started
        setattr(strategy, name, timed)
    return spent


def measure(model_name: str, task_name: str, data_dir, steps: int, rounds: int,
            batch_size: int, device: str, max_length: int = 128) -> dict:
    task, tokenizer, encoded = encoded_task(model_name, task_name, data_dir, max_length)
    batches = fixed_batches(encoded, tokenizer, batch_size, steps)
    labels = len(task.label_names)
    lr = 1e-3

    def run(strategy) -> list[float]:
        model, optimizer, scheduler = prepared(model_name, labels, strategy, device, lr, steps)
        return timed_steps(model, strategy, optimizer, scheduler, batches, device)

    seconds: dict[str, list[float]] = {"ir-tuning": [], "random-layers (same blocks)": [],
                                       "ir-tuning, reference tracker": []}
    trace, reference_trace, num_blocks = None, None, 0
    direct = {"ir-tuning": 0.0, "ir-tuning, reference tracker": 0.0}
    for _ in range(rounds):
        ir = IRTuning(IRTuningConfig(), seed=0)
        spent = timed_bookkeeping(ir)
        seconds["ir-tuning"].append(median_after_warmup(run(ir)))
        direct["ir-tuning"] += spent["seconds"] / (steps * rounds)
        trace, num_blocks = trace or ir.selection_trace, ir.num_blocks
        seconds["random-layers (same blocks)"].append(median_after_warmup(run(ReplayedLayers(trace))))
        reference = ReferenceTrackerIRTuning(IRTuningConfig(), seed=0)
        spent = timed_bookkeeping(reference)
        seconds["ir-tuning, reference tracker"].append(median_after_warmup(run(reference)))
        direct["ir-tuning, reference tracker"] += (spent["seconds"] + reference.hook_seconds) / (steps * rounds)
        reference_trace = reference.selection_trace
    per_step = {name: statistics.median(values) for name, values in seconds.items()}
    return {"model": model_name, "steps": steps, "rounds": rounds, "per_step_s": per_step,
            "bookkeeping_s": direct,
            "blocks": num_blocks,
            "mean_selected": statistics.fmean(len(s) for s in trace),
            # The reference tracker computes the same scores: the same blocks should follow.
            "same_selection_as_reference": reference_trace == trace}


def report(results: list[dict]) -> str:
    rows = []
    for r in results:
        t = r["per_step_s"]
        base = t["random-layers (same blocks)"]
        rows.append([r["model"], f"{1000 * t['random-layers (same blocks)']:.1f}",
                     f"{1000 * t['ir-tuning']:.1f}", f"{100 * (t['ir-tuning'] / base - 1):+.1f}%",
                     f"{1000 * t['ir-tuning, reference tracker']:.1f}",
                     f"{100 * (t['ir-tuning, reference tracker'] / base - 1):+.1f}%",
                     f"{1000 * r['bookkeeping_s']['ir-tuning']:.2f} ({100 * r['bookkeeping_s']['ir-tuning'] / base:.2f}%)",
                     f"{1000 * r['bookkeeping_s']['ir-tuning, reference tracker']:.2f} "
                     f"({100 * r['bookkeeping_s']['ir-tuning, reference tracker'] / base:.2f}%)",
                     f"{r['mean_selected']:.1f} of {r['blocks']}", "yes" if r["same_selection_as_reference"] else "no"])
    return table(["model", "random-layers, same blocks (ms/step)", "ir-tuning (ms/step)",
                  "ir-tuning over random", "reference tracker (ms/step)",
                  "reference tracker over random",
                  "ir-tuning scoring + split, timed directly (ms/step, % of step)",
                  "reference hooks + scoring + split, timed directly (ms/step, % of step)",
                  "blocks trained/step",
                  "reference picks the same blocks"], rows)


def build_parser():
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[DEFAULT_MODEL, "tiny-llama"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    results = [measure(m, args.task, args.data_dir, args.steps, args.rounds, args.batch_size, device)
               for m in args.models]
    print(f"IR-Tuning bookkeeping on {args.task}, batch {args.batch_size}, {args.steps} steps x "
          f"{args.rounds} rounds per variant (median step time after 2 warm-up steps); {machine()}")
    print(report(results))
    print(f"goal: ir-tuning at most {100 * GOAL_OVER_RANDOM:.0f}% over random-layers with the same blocks")
    return 0


if __name__ == "__main__":
    run_main(main)
