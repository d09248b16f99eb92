"""Where a training step's time could be taken back: each candidate timed on its own, on
MiniLM's real parameters and activation shapes, in one process.

- AdamW over the whole model: torch's per-tensor loop (its CPU default), `foreach`, `fused`;
- gradient clipping: the default and `foreach`;
- a dropout mask the size of one attention-probability tensor and one hidden-state tensor:
  `F.dropout` (what the model runs), `bernoulli_` alone, and a mask from `rand_like`;
- `torch.compile` of the model (dynamic shapes): compile time, then steady step time
  against eager on the same batches (forward, backward, clipping, fused AdamW).

    python -m benchmark.tools.perf.step_candidates
    python -m benchmark.tools.perf.step_candidates --model tiny-llama --no-compile
"""

from __future__ import annotations

import time

from .common import base_parser, machine, run_main, table


def build_parser():
    parser = base_parser(__doc__.splitlines()[0])
    parser.set_defaults(batch_size=16)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--length", type=int, default=96, help="tokens per example")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compile-steps", type=int, default=16)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    return parser


def _ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats * 1000


def optimizer_rows(params, repeats: int) -> list[list]:
    import torch

    rows = []
    for label, kwargs in [("AdamW, per-tensor loop (torch's CPU default)", {}),
                          ("AdamW, foreach", {"foreach": True}),
                          ("AdamW, fused (the Trainer's default, now the loop's)", {"fused": True})]:
        optimizer = torch.optim.AdamW(params, lr=1e-5, **kwargs)
        rows.append([label, f"{_ms(optimizer.step, repeats):.1f}"])
    for label, kwargs in [("clip_grad_norm_", {}), ("clip_grad_norm_, foreach", {"foreach": True})]:
        rows.append([label, f"{_ms(lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, **kwargs), repeats):.1f}"])
    return rows


def dropout_rows(shapes: dict[str, tuple], repeats: int) -> list[list]:
    import torch
    import torch.nn.functional as F

    rows = []
    for name, shape in shapes.items():
        x = torch.randn(shape)
        rows.append([f"dropout 0.1 on {name} {tuple(shape)}: F.dropout",
                     f"{_ms(lambda: F.dropout(x, 0.1, True), repeats):.2f}"])
        rows.append([f"  bernoulli_ mask alone",
                     f"{_ms(lambda: torch.empty_like(x).bernoulli_(0.9), repeats):.2f}"])
        rows.append([f"  mask from rand_like, applied",
                     f"{_ms(lambda: x * (torch.rand_like(x) >= 0.1) / 0.9, repeats):.2f}"])
    return rows


def compile_rows(model, num_labels: int, args) -> list[list]:
    """Eager against torch.compile(dynamic=True) on the same batches of varying length."""
    import torch

    lengths = [args.length - 24 + 8 * (i % 7) for i in range(args.compile_steps)]
    batches = [{"input_ids": torch.randint(1000, 20000, (args.batch_size, n)),
                "labels": torch.randint(0, num_labels, (args.batch_size,))} for n in lengths]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    model.train()

    def step(callable_model, batch):
        loss = callable_model(input_ids=batch["input_ids"],
                              attention_mask=torch.ones_like(batch["input_ids"]),
                              labels=batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    rows = []
    for label, callable_model in [("eager", model), ("torch.compile(dynamic=True)", torch.compile(model, dynamic=True))]:
        started = time.perf_counter()
        step(callable_model, batches[0])
        step(callable_model, batches[1])  # dynamic shapes: the second length may recompile
        first = time.perf_counter() - started
        started = time.perf_counter()
        for batch in batches:
            step(callable_model, batch)
        steady = (time.perf_counter() - started) / len(batches) * 1000
        rows.append([label, f"{first:.1f}", f"{steady:.0f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    import torch

    from ...trial import models

    args = build_parser().parse_args(argv)
    print(f"# Step candidates on {args.model} ({machine()})\n", flush=True)
    num_labels = 5
    model = models.load_model(args.model, num_labels)[0]
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    print(f"{sum(p.numel() for p in params) / 1e6:.1f}M parameters in {len(params)} tensors, "
          f"batch {args.batch_size} x {args.length} tokens\n")
    print(table(["whole-model optimizer work", "ms per step"], optimizer_rows(params, args.repeats)))
    config = model.config
    shapes = {"attention probabilities": (args.batch_size, config.num_attention_heads, args.length, args.length),
              "hidden states": (args.batch_size, args.length, config.hidden_size)}
    print()
    print(table(["dropout mask", "ms per call"], dropout_rows(shapes, args.repeats)))
    if args.compile:
        for p in params:
            p.grad = None
        print()
        print(table(["training step", "first two steps, s", "steady ms per step"],
                    compile_rows(model, num_labels, args)))
    return 0


if __name__ == "__main__":
    run_main(main)
