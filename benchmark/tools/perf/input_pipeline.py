"""Input pipeline: training throughput with this suite's batches against the reference's.

- `dynamic, length-grouped` (the suite): tokenized once and cached, batches drawn by
  transformers' LengthGroupedSampler and padded to their own longest sequence;
- `dynamic, random order`: the same padding rule with plain shuffled batches;
- `padded to 256` (the reference): every example padded to 256 tokens, shuffled.
Each loader is run through one whole epoch (timed: collation is the loading cost), and
full-ft then trains from the same weights on `--steps` batches spread evenly over that
epoch (the length-grouped sampler puts its longest batch first, so the first batches alone
would mislead). Samples per second = samples / (training time + their share of loading).

    python -m benchmark.tools.perf.input_pipeline --model minilm --steps 40
"""

from __future__ import annotations

import time

from ...trial.config import resolve_device
from ...trial.models import DEFAULT_MODEL
from .common import base_parser, encoded_task, machine, prepared, run_main, table

REFERENCE_LENGTH = 256


def loaders(encoded, tokenizer, batch_size: int, seed: int = 0) -> dict:
    import torch
    from transformers import DataCollatorWithPadding

    from ...trial import data

    train = encoded["train"]
    columns = [c for c in data.MODEL_COLUMNS if c in train.column_names]
    generator = lambda: torch.Generator().manual_seed(seed)
    plain = train.with_format("torch", columns=columns)
    return {
        "dynamic, length-grouped (suite)": data.make_loader(train, tokenizer, batch_size,
                                                             shuffle=True, seed=seed),
        "dynamic, random order": torch.utils.data.DataLoader(
            plain, batch_size=batch_size, shuffle=True, generator=generator(),
            collate_fn=DataCollatorWithPadding(tokenizer, padding="longest")),
        f"padded to {REFERENCE_LENGTH} (reference)": torch.utils.data.DataLoader(
            plain, batch_size=batch_size, shuffle=True, generator=generator(),
            collate_fn=DataCollatorWithPadding(tokenizer, padding="max_length",
                                               max_length=REFERENCE_LENGTH)),
    }


def measure(model_name: str, task_name: str, data_dir, steps: int, batch_size: int,
            device: str) -> list[dict]:
    from strategies import get_strategy

    from ...trial.step import optimizer_step

    task, tokenizer, encoded = encoded_task(model_name, task_name, data_dir, REFERENCE_LENGTH)
    results = []
    for name, loader in loaders(encoded, tokenizer, batch_size).items():
        strategy = get_strategy("full-ft", {}, seed=0)
        model, optimizer, scheduler = prepared(model_name, len(task.label_names), strategy,
                                               device, 1e-4, steps)
        trainable = strategy.trainable_params()
        started = time.perf_counter()
        epoch = list(loader)
        load_per_batch = (time.perf_counter() - started) / len(epoch)
        chosen = [epoch[i * len(epoch) // steps] for i in range(min(steps, len(epoch)))]
        model.train()
        started = time.perf_counter()
        for step, batch in enumerate(chosen):
            optimizer_step(model, strategy, optimizer, [batch], step, device=device,
                           trainable=trainable).item()
            scheduler.step()
        seconds = time.perf_counter() - started + load_per_batch * len(chosen)
        samples = sum(b["labels"].shape[0] for b in chosen)
        tokens = sum(int(b["attention_mask"].sum()) for b in epoch)
        padded = sum(b["attention_mask"].numel() for b in epoch)
        results.append({"pipeline": name, "samples_per_s": samples / seconds,
                        "padding_share": 1 - tokens / padded,
                        "mean_batch_length": padded / sum(b["labels"].shape[0] for b in epoch)})
    return results


def build_parser():
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=40)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = measure(args.model, args.task, args.data_dir, args.steps, args.batch_size,
                      resolve_device(args.device))
    suite = results[0]["samples_per_s"]
    print(f"Input pipeline: full-ft {args.model} on {args.task}, batch {args.batch_size}, "
          f"{args.steps} steps per pipeline, loading included; {machine()}")
    print(table(["pipeline", "training samples/s", "vs padded to 256", "padding share of tokens (epoch)",
                 "mean padded length (epoch)"],
                [[r["pipeline"], f"{r['samples_per_s']:.1f}",
                  f"{r['samples_per_s'] / results[-1]['samples_per_s']:.2f}x",
                  f"{100 * r['padding_share']:.0f}%", f"{r['mean_batch_length']:.0f}"]
                 for r in results]))
    print(f"suite pipeline / reference pipeline: {suite / results[-1]['samples_per_s']:.2f}x")
    return 0


if __name__ == "__main__":
    run_main(main)
