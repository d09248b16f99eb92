"""Peer comparison: this project's training loop against the transformers `Trainer`, on the
same inputs and settings, for full fine-tuning and LoRA.

Both get the project's tokenized splits (the cached pipeline, the suite's input format),
length-grouped batches of the same size, the same model built by `build_trial` (for LoRA
the peft model the `lora` strategy makes, its head trainable), AdamW over the same
parameter groups (the head at its own learning rate) with the same warm-up and linear
decay, clipping at 1.0 and the same autocast precision. The Trainer gets the AdamW its
users get by default (`adamw_torch_fused` since transformers 4.5x with torch >= 2.8);
the loop uses its own optimizer. The Trainer's model is set up as a careful user would set
it up: transformers' default attention (sdpa) and dropout, and under bf16 the frozen base
weights of an adapter stored in bf16 (loading the model in bf16; peft keeps the adapters
in fp32); the loop runs the `train` defaults (benchmark/trial/kernels.py), or the legacy
path with `--loop-kernels legacy`.

Two measurements, each variant in its own process, alternating loop / Trainer:
- speed: training samples per second over `--speed-steps` steps, no evaluation;
- quality: test macro F1 after `--steps` steps (the last step's weights, no model
  selection on either side), on every seed.

    python -m benchmark.tools.perf.peer                       # MiniLM, full-ft and LoRA, 3 seeds
    python -m benchmark.tools.perf.peer --model tiny-llama --steps 4 --speed-steps 4 --seeds 0
    python -m benchmark.tools.perf.peer --steps 0 --speed-steps 0 --profile-steps 10  # profiles only

A profile (`--profile-steps K`) records K training steps of each runner under the torch
profiler, after 3 steps' warm-up, and prints the operators taking most of a step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ...trial.models import DEFAULT_MODEL
from .common import base_parser, machine, run_main, table

RUNNERS = ("loop", "trainer")
DEFAULT_LR = {"full-ft": 5e-5, "lora": 3e-4}  # the revisions suite's chosen rates


def build_parser():
    parser = base_parser(__doc__.splitlines()[0])
    parser.set_defaults(batch_size=16)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--strategies", nargs="+", default=["full-ft", "lora"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=350,
                        help="training steps for test F1; 0 skips the F1 comparison")
    parser.add_argument("--speed-steps", type=int, default=100,
                        help="steps timed for samples/s (no evaluation); 0 skips speed")
    parser.add_argument("--speed-repeats", type=int, default=2)
    parser.add_argument("--input-format", default="diff")
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--adamw", default="fused", choices=("fused", "loop"),
                        help="the loop's AdamW kernel (the Trainer always gets its default)")
    parser.add_argument("--loop-kernels", default="defaults", choices=("defaults", "legacy"),
                        help="the loop's kernel choices: the `train` defaults or the legacy path")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="profile this many training steps of each runner (0: none)")
    parser.add_argument("--top", type=int, default=8, help="operators listed per profile")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process's variant
    return parser


def config_for(strategy: str, args, seed: int, steps: int, runner: str = "loop"):
    from ...trial.config import TrainConfig
    from ...trial.kernels import LEGACY_KERNELS

    if runner == "trainer":  # transformers' own kernels; a bf16 model's frozen weights
        kernels = {"attention": "sdpa", "dropout_masks": "torch", "frozen_weights": "compute",
                   "lora_input_cast": "adapter"}
    else:
        kernels = LEGACY_KERNELS if args.loop_kernels == "legacy" else {}
    return TrainConfig(**kernels, task=args.task, strategy=strategy, model=args.model,
                       data_dir=args.data_dir,
                       seed=seed, max_steps=steps, batch_size=args.batch_size,
                       lr=DEFAULT_LR.get(strategy), head_lr=args.head_lr,
                       input_format=args.input_format, eval_every=steps, device=args.device,
                       adamw=args.adamw)


PROFILE_WARMUP = 3


class StepProfiler:
    """The torch profiler over `steps` training steps after a warm-up; `step()` is called
    after every training step by either runner."""

    def __init__(self, steps: int):
        import torch

        self.steps = steps
        self.profiler = None
        if steps:
            schedule = torch.profiler.schedule(wait=PROFILE_WARMUP - 1, warmup=1, active=steps, repeat=1)
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                   schedule=schedule)
            self.profiler.start()
        self.seen = 0
        self.window_started = None
        self.window_s = 0.0

    def step(self) -> None:
        if not self.profiler:
            return
        self.seen += 1
        now = time.perf_counter()
        if self.seen == PROFILE_WARMUP:
            self.window_started = now
        elif self.seen == PROFILE_WARMUP + self.steps:
            self.window_s = now - self.window_started
        if self.seen <= PROFILE_WARMUP + self.steps:
            self.profiler.step()

    def top(self, count: int) -> dict[str, Any] | None:
        """Per training step: wall ms, and the operators by self CPU ms."""
        if not self.profiler:
            return None
        self.profiler.stop()
        events = self.profiler.key_averages()
        rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
        per_step = lambda us: round(us / 1000 / self.steps, 2)
        return {"step_ms": round(self.window_s * 1000 / self.steps, 1),
                "ops_self_ms": per_step(sum(e.self_cpu_time_total for e in events)),
                "top": [[e.key, per_step(e.self_cpu_time_total), round(e.count / self.steps, 1)]
                        for e in rows[:count]]}


def run_loop(config, profiler: StepProfiler) -> dict[str, Any]:
    from ...trial.loop import run_trial

    result = run_trial(config, on_step=lambda *_: profiler.step())
    return {"samples_per_s": result["train_samples_per_s"], "test_macro_f1": result["test"]["macro_f1"],
            "train_time_s": result["train_time_s"]}


def trainer_groups(trial) -> list[dict[str, Any]]:
    """The loop's parameter groups at their base rates, for the Trainer's own AdamW: the
    rate before the trial's schedule scaled it (warm-up starts at 0; read after it, every
    rate is 0 and the Trainer never moves a weight)."""
    return [{"params": g["params"], "lr": g.get("initial_lr", g["lr"])}
            for g in trial.optimizer.param_groups]


def run_trainer(config, profiler: StepProfiler) -> dict[str, Any]:
    """The same trial through `transformers.Trainer`."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    class ProfilerSteps(TrainerCallback):
        def on_step_end(self, *_, **__):
            profiler.step()

    from ...trial.build import build_trial
    from ...trial.metrics import classification_metrics

    trial = build_trial(config)
    groups = trainer_groups(trial)
    # TrainingArguments' default `optim` (adamw_torch_fused), over the same groups
    fused = TrainingArguments(output_dir=tempfile.gettempdir(), report_to=[]).optim == "adamw_torch_fused"
    optimizer = torch.optim.AdamW(groups, lr=trial.lr, weight_decay=config.weight_decay,
                                  fused=fused or None)
    import transformers

    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, trial.warmup,
                                                             config.max_steps)
    columns = ["input_ids", "attention_mask", "labels"]
    train = trial.splits["train"].select_columns(columns)
    test = trial.splits["test"].select_columns(columns)
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out, per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.eval_batch_size, max_steps=config.max_steps,
            max_grad_norm=config.max_grad_norm, bf16=trial.precision == "bf16",
            use_cpu=trial.device == "cpu", train_sampling_strategy="group_by_length", seed=config.seed,
            data_seed=config.seed, report_to=[], save_strategy="no", logging_strategy="no",
            eval_strategy="no", disable_tqdm=True, dataloader_num_workers=0)
        trainer = Trainer(model=trial.model, args=arguments, train_dataset=train,
                          data_collator=DataCollatorWithPadding(trial.tokenizer),
                          optimizers=(optimizer, scheduler), callbacks=[ProfilerSteps()])
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        output = trainer.predict(test)
    probs = torch.softmax(torch.as_tensor(output.predictions).float(), dim=-1).numpy()
    test_f1 = classification_metrics(output.label_ids, probs, trial.task.label_names)["macro_f1"]
    samples = config.max_steps * config.batch_size
    return {"samples_per_s": round(samples / seconds, 2), "test_macro_f1": test_f1,
            "train_time_s": round(seconds, 2)}


def one(spec: str) -> int:
    """Child process: run one variant, print its figures as JSON."""
    import torch

    runner, strategy, seed, steps, profile, rest = spec.split(":", 5)
    args = build_parser().parse_args(json.loads(rest))
    if args.threads:
        torch.set_num_threads(args.threads)
    config = config_for(strategy, args, int(seed), int(steps), runner)
    profiler = StepProfiler(args.profile_steps if profile == "1" else 0)
    figures = (run_loop if runner == "loop" else run_trainer)(config, profiler)
    figures["profile"] = profiler.top(args.top)
    print("PEER " + json.dumps(figures), flush=True)
    return 0


def child(runner: str, strategy: str, seed: int, steps: int, argv: list[str],
          profile: bool = False) -> dict[str, Any]:
    spec = f"{runner}:{strategy}:{seed}:{steps}:{int(profile)}:{json.dumps(argv)}"
    done = subprocess.run([sys.executable, "-m", "benchmark.tools.perf.peer", "--one", spec],
                          capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("PEER "):
            return json.loads(line[5:])
    lines = [l for l in done.stderr.strip().splitlines() if l.strip()]
    raise RuntimeError(f"{runner} {strategy} seed {seed} failed: {lines[-1] if lines else done.returncode}")


def _profile_text(strategy: str, runner: str, found: dict[str, Any], steps: int) -> str:
    heading = (f"{strategy}, {runner}: {found['step_ms']} ms per step over {steps} profiled "
               f"steps, operators' self CPU {found['ops_self_ms']} ms of it")
    return heading + "\n" + table(["operator", "self CPU ms per step", "calls per step"], found["top"])


def _f1_cell(values: list[float]) -> str:
    if not values:
        return "–"
    return " / ".join(f"{v:.3f}" for v in values) + f" ({statistics.fmean(values):.3f})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.one:
        return one(args.one)
    print(f"# Peer comparison: this loop against transformers.Trainer ({machine()})")
    print(f"model {args.model}, task {args.task}, input {args.input_format}, batch "
          f"{args.batch_size}, head lr {args.head_lr}, lr {DEFAULT_LR}\n", flush=True)
    figures: dict[str, Any] = {"speed": {}, "quality": {}, "profile": {}}
    rows = []
    profiles = []
    # Timed work first (profiles, speed), on a machine left quiet; the F1 runs after it
    # time nothing, so other work may share the machine while they run.
    speeds = {}
    for strategy in args.strategies:
        for runner in RUNNERS if args.profile_steps else []:
            found = child(runner, strategy, args.seeds[0], args.profile_steps + PROFILE_WARMUP + 1,
                          argv, profile=True)["profile"]
            figures["profile"].setdefault(strategy, {})[runner] = found
            profiles.append(_profile_text(strategy, runner, found, args.profile_steps))
        speed = speeds[strategy] = {r: [] for r in RUNNERS}
        for _ in range(args.speed_repeats if args.speed_steps else 0):
            for runner in RUNNERS:  # alternating, so drift hits both alike
                speed[runner].append(child(runner, strategy, args.seeds[0], args.speed_steps,
                                           argv)["samples_per_s"])
        print(f"{strategy}: profiles and speed done", file=sys.stderr, flush=True)
    for strategy in args.strategies:
        speed = speeds[strategy]
        quality = {r: [] for r in RUNNERS}
        for seed in args.seeds if args.steps else []:
            for runner in RUNNERS:
                quality[runner].append(child(runner, strategy, seed, args.steps, argv)["test_macro_f1"])
        figures["speed"][strategy], figures["quality"][strategy] = speed, quality
        mean = lambda values: statistics.fmean(values) if values else float("nan")
        ratio = mean(speed["loop"]) / mean(speed["trainer"]) if speed["trainer"] else float("nan")
        rows.append([strategy,
                     ", ".join(f"{v:.1f}" for v in speed["trainer"]) or "–",
                     ", ".join(f"{v:.1f}" for v in speed["loop"]) or "–", f"{ratio:.2f}x",
                     _f1_cell(quality["trainer"]), _f1_cell(quality["loop"])])
    for text in profiles:
        print(text + "\n")
    if not (args.speed_steps or args.steps):
        return 0
    print(table(["strategy", "Trainer samples/s", "loop samples/s", "loop / Trainer",
                 f"Trainer test macro F1, seeds {args.seeds} (mean)",
                 f"loop test macro F1, seeds {args.seeds} (mean)"], rows))
    print(f"\nspeed: {args.speed_steps} steps, no evaluation, {args.speed_repeats} alternating "
          f"repeats on seed {args.seeds[0]}; F1: {args.steps} steps, test at the last step")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    run_main(main)
