"""Data-parallel parity check: the same global batches through N Ray Train workers (with
DeepSpeed ZeRO or plain all-reduce) and through one plain process, for every strategy.

    python -m benchmark.tools.parity --workers 2 --deepspeed zero2

prints, per strategy, the loss of each step both ways and checks on every worker that the
blocks whose weights changed are exactly the blocks the strategy selected (weight decay
0.1 makes any block the optimizer touches move). The tests run it; it is also a quick
check of a new cluster. The model is the tiny random Llama: this checks mechanics, it
measures nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..trial.backends import DEEPSPEED_CHOICES

GLOBAL_BATCH = 8
STEPS = 4
LEARNING_RATE = 1e-2
WEIGHT_DECAY = 0.1


def _batches(tokenizer, steps: int = STEPS, batch_size: int = GLOBAL_BATCH):
    """Fixed global batches of real text through the real tokenizer."""
    import torch

    words = "the writer revised this sentence to make its claim clearer and more fluent".split()
    batches = []
    for step in range(steps):
        originals = [" ".join(words[(step + i) % 5:(step + i) % 5 + 6]) for i in range(batch_size)]
        revised = [" ".join(words[(step + 2 * i) % 6:(step + 2 * i) % 6 + 7]) for i in range(batch_size)]
        encoded = dict(tokenizer(originals, revised, padding=True, return_tensors="pt"))
        encoded["labels"] = torch.tensor([(step + i) % 3 for i in range(batch_size)])
        batches.append(encoded)
    return batches


def parity_strategies(deepspeed: str = "zero2") -> dict[str, dict[str, Any]]:
    """Every strategy that runs under this ZeRO stage, with its `tiny_options`: no dropout
    (a worker's dropout masks differ from a single process's) and small adapters."""
    from strategies import STRATEGIES

    stage = int(deepspeed.removeprefix("zero")) if deepspeed != "none" else None
    return {name: dict(cls.tiny_options) for name, cls in STRATEGIES.items()
            if stage is None or stage in cls.zero_stages}


def run_strategy(strategy_name: str, options: dict[str, Any], deepspeed: str,
                 steps: int = STEPS) -> dict[str, Any]:
    """Train `steps` steps in this process (one worker of many, or alone); returns the
    global loss, the selection and the changed blocks of each step."""
    import torch

    from ..trial.build import build_trial
    from ..trial.config import TrainConfig

    config = TrainConfig(strategy=strategy_name, strategy_options=options, model="tiny-llama",
                         max_steps=steps, batch_size=GLOBAL_BATCH, weight_decay=WEIGHT_DECAY,
                         lr=LEARNING_RATE, warmup_steps=0, deepspeed=deepspeed, device="cpu",
                         precision="fp32")
    trial = build_trial(config, num_labels=3, with_data=False)
    trial.attach_probe_batches(itertools.cycle(_batches(trial.tokenizer, steps)))  # IST's probes
    backend, blocks = trial.backend, trial.strategy.parts.blocks
    strategy = trial.strategy
    losses, selected, changed = [], [], []
    weights = lambda: [backend.snapshot(list(block.parameters())) for block in blocks]
    for step, batch in enumerate(_batches(trial.tokenizer, steps)):
        before = weights()  # gathered: ZeRO-3 partitions the parameters
        loss = trial.train_step([batch], step)
        losses.append(backend.mean(loss).item())
        # Without a selection trace, a strategy trains the blocks that hold trainable
        # weights (all of them for full-ft and LoRA, none for head-only).
        selected.append(sorted(strategy.selection_trace[-1]) if strategy.selection_trace
                        else [i for i, block in enumerate(blocks)
                              if any(p.requires_grad for p in block.parameters())])
        after = weights()
        changed.append([i for i in range(len(blocks))
                        if any(not torch.equal(a, b) for a, b in zip(before[i], after[i]))])
    return {"losses": losses, "selected": selected, "changed": changed,
            "rank": backend.rank, "world_size": backend.world_size}


def _worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import torch

    torch.set_num_threads(1)
    options = parity_strategies(loop_config["deepspeed"])
    out = {name: run_strategy(name, options[name], loop_config["deepspeed"])
           for name in loop_config["strategies"]}
    rank = ray.train.get_context().get_world_rank()
    Path(loop_config["out_dir"], f"rank{rank}.json").write_text(json.dumps(out))


def run_parity(workers: int = 2, deepspeed: str = "zero2",
               strategies: list[str] | None = None) -> dict[str, Any]:
    """{"workers": [per-rank results], "single": single-process results}."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from ..sweep.ray_cluster import start_ray

    known = parity_strategies(deepspeed)
    strategies = list(strategies or known)
    unknown = sorted(set(strategies) - set(known))
    if unknown:
        raise UserError(f"unknown strategy {unknown[0]!r}; known: {', '.join(known)}")
    started = start_ray(None)
    try:
        with tempfile.TemporaryDirectory() as folder:
            TorchTrainer(_worker, train_loop_config={"deepspeed": deepspeed, "out_dir": folder,
                                                      "strategies": strategies},
                         scaling_config=ScalingConfig(num_workers=workers,
                                                      resources_per_worker={"CPU": 1}),
                         torch_config=TorchConfig(backend="gloo"),
                         run_config=RunConfig(storage_path=str(Path(folder, "ray").resolve()),
                                              name="parity")).fit()
            ranks = [json.loads(Path(folder, f"rank{r}.json").read_text()) for r in range(workers)]
    finally:
        if started:
            import ray

            ray.shutdown()
    single = {name: run_strategy(name, known[name], "none") for name in strategies}
    return {"workers": ranks, "single": single}


def report(parity: dict[str, Any], tolerance: float) -> tuple[str, list[str]]:
    """(a Markdown table of the losses, the problems found)."""
    problems = []
    lines = ["| strategy | step | loss, 1 process | loss, workers | abs. difference | blocks trained |",
             "|---|---|---|---|---|---|"]
    for name, single in parity["single"].items():
        ranks = [r[name] for r in parity["workers"]]
        for step, one in enumerate(single["losses"]):
            many = ranks[0]["losses"][step]
            lines.append(f"| {name} | {step + 1} | {one:.6f} | {many:.6f} | {abs(one - many):.1e} "
                         f"| {''.join(str(i) for i in ranks[0]['selected'][step])} |")
            if abs(one - many) > tolerance * max(1.0, abs(one)):
                problems.append(f"{name} step {step + 1}: loss {many:.6f} vs {one:.6f}")
        for r in ranks:
            if r["selected"] != ranks[0]["selected"]:
                problems.append(f"{name}: rank {r['rank']} selected {r['selected']}, "
                                f"rank 0 {ranks[0]['selected']}")
            if r["changed"] != r["selected"]:
                problems.append(f"{name}: on rank {r['rank']} blocks {r['changed']} changed, "
                                f"{r['selected']} were selected")
    return "\n".join(lines), problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark.tools.parity",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--deepspeed", choices=DEEPSPEED_CHOICES, default="zero2")
    parser.add_argument("--strategies", nargs="+", default=None, metavar="NAME",
                        help="default: every strategy that runs under ZeRO")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest relative loss difference accepted")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        parity = run_parity(args.workers, args.deepspeed, args.strategies)
        table, problems = report(parity, args.tolerance)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("parity holds" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
