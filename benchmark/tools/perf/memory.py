"""Memory: each strategy's peak against full fine-tuning, and what a frozen block saves.

1. Peak memory per strategy: each strategy trains in its own process (`benchmark train`,
   same model, batch and steps), so every peak is that strategy's alone: peak RSS on a
   CPU, NVML per-process memory (and torch's allocator peak) on a GPU.
2. Frozen blocks: `ir-tuning` with `adapter: none` trains whole blocks. After every step
   it lists which blocks hold optimizer state and gradients. A frozen block should hold
   no gradient, and optimizer state only if it trained before (`optimizer_state: keep`)
   or never (`drop`). The figures are bytes of AdamW state and of gradients, beside what
   full fine-tuning holds.

    python -m benchmark.tools.perf.memory --model minilm --steps 20
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from strategies import get_strategy

from ...trial.config import resolve_device
from ...trial.models import DEFAULT_MODEL
from .common import base_parser, encoded_task, fixed_batches, machine, prepared, run_main, table, timed_steps

MIB = 1024 * 1024


def strategy_peaks(model: str, task: str, data_dir, steps: int, batch_size: int, device: str,
                   strategies: list[str]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in strategies:
            out = Path(tmp) / f"{name}.json"
            command = [sys.executable, "-m", "benchmark", "train", "--model", model, "--task", task,
                       "--strategy", name, "--max-steps", str(steps), "--eval-every", str(steps),
                       "--batch-size", str(batch_size), "--eval-limit", "32", "--test-limit", "32",
                       "--device", device, "--out", str(out)]
            if data_dir:
                command += ["--data-dir", str(data_dir)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{name}: {done.stderr.strip().splitlines()[-1:]}")
            result = json.loads(out.read_text())
            rows.append({"strategy": name, "peak_mb": result["peak_memory_mb"],
                         "source": result["memory_source"],
                         "torch_peak_mb": result.get("torch_peak_allocated_mb"),
                         "trainable_share": result["trainable_share"]})
    return rows


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def frozen_block_state(model: str, task_name: str, data_dir, steps: int, batch_size: int,
                       device: str, optimizer_state: str) -> dict:
    """Per step: blocks trained so far, blocks holding AdamW state, blocks holding gradients."""
    task, tokenizer, encoded = encoded_task(model, task_name, data_dir, 128)
    batches = fixed_batches(encoded, tokenizer, batch_size, steps)
    strategy = get_strategy("ir-tuning", {"adapter": "none", "optimizer_state": optimizer_state}, seed=0)
    net, optimizer, scheduler = prepared(model, len(task.label_names), strategy, device, 1e-4, steps)
    owner = {id(p): i for i, params in enumerate(strategy.block_params) for p in params}
    trained: set[int] = set()
    per_step = []
    seen_grads: dict[str, object] = {}
    scored = strategy.after_backward

    def after_backward(step: int) -> None:  # gradients exist only until the step applies them
        seen_grads["blocks"] = {owner[id(p)] for params in strategy.block_params for p in params
                                if p.grad is not None}
        seen_grads["bytes"] = _bytes(p.grad for params in strategy.block_params for p in params
                                     if p.grad is not None)
        scored(step)

    strategy.after_backward = after_backward

    def inspect(step: int) -> None:
        trained.update(strategy.selected)
        with_state = {owner[id(p)] for p in optimizer.state if id(p) in owner}
        with_grad = seen_grads["blocks"]
        state = [v for p, s in optimizer.state.items() if id(p) in owner
                 for v in s.values() if hasattr(v, "numel") and v.dim() > 0]
        per_step.append({"step": step + 1, "selected": len(strategy.selected),
                         "trained_so_far": len(trained), "blocks_with_state": len(with_state),
                         "state_only_for_trained": with_state <= trained,
                         "grad_only_for_selected": with_grad <= set(strategy.selected),
                         "state_mb": _bytes(state) / MIB, "grad_mb": seen_grads["bytes"] / MIB})

    timed_steps(net, strategy, optimizer, scheduler, batches, device, on_step=inspect)
    block_param_bytes = _bytes(p for params in strategy.block_params for p in params)
    return {"optimizer_state": optimizer_state, "num_blocks": strategy.num_blocks,
            "per_step": per_step, "full_ft_state_mb": 2 * block_param_bytes / MIB,
            "full_ft_grad_mb": block_param_bytes / MIB}


def build_parser():
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--strategies", nargs="+", default=None,
                        help="default: every registered strategy")
    return parser


def main(argv: list[str] | None = None) -> int:
    from strategies import STRATEGIES

    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    print(f"Memory: {args.model} on {args.task}, batch {args.batch_size}, {args.steps} steps; {machine()}")
    peaks = strategy_peaks(args.model, args.task, args.data_dir, args.steps, args.batch_size,
                           device, args.strategies or STRATEGIES.names())
    full = next((r["peak_mb"] for r in peaks if r["strategy"] == "full-ft"), None)
    print(table(["strategy", f"peak memory (MiB, {peaks[0]['source']})", "vs full-ft",
                 "torch allocator peak (MiB)", "trainable share"],
                [[r["strategy"], f"{r['peak_mb']:.0f}",
                  f"{r['peak_mb'] / full:.2f}x" if full else "–",
                  f"{r['torch_peak_mb']:.0f}" if r["torch_peak_mb"] else "– (CPU)",
                  f"{100 * r['trainable_share']:.2f}%"] for r in peaks]))
    for policy in ("keep", "drop"):
        state = frozen_block_state(args.model, args.task, args.data_dir, min(args.steps, 6),
                                   args.batch_size, device, policy)
        print(f"\nir-tuning, adapter none, optimizer_state={policy}: {state['num_blocks']} blocks; "
              f"full-ft would hold {state['full_ft_state_mb']:.1f} MiB of AdamW state and "
              f"{state['full_ft_grad_mb']:.1f} MiB of gradients for them")
        print(table(["step", "blocks selected", "blocks trained so far", "blocks with AdamW state",
                     "state only for trained blocks", "gradients only for selected blocks",
                     "AdamW state (MiB)", "gradients (MiB)"],
                    [[s["step"], s["selected"], s["trained_so_far"], s["blocks_with_state"],
                      "yes" if s["state_only_for_trained"] else "NO",
                      "yes" if s["grad_only_for_selected"] else "NO",
                      f"{s['state_mb']:.1f}", f"{s['grad_mb']:.1f}"] for s in state["per_step"]]))
    return 0


if __name__ == "__main__":
    run_main(main)
