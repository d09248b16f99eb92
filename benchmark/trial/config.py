"""A trial's configuration: one dataclass whose fields are also the `train` command's flags
and the keys a suite's `budget` takes, so the three cannot drift apart."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from ..core.errors import UserError
from .backends import DEEPSPEED_CHOICES
from .data import INPUT_FORMATS
from .kernels import ATTENTION_CHOICES, DROPOUT_MASKS, FROZEN_WEIGHTS, LORA_INPUT_CASTS
from .metrics import DEFAULT_CONVERGE_TOLERANCE
from .models import DEFAULT_MODEL

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LOSSES = ("ce", "balanced-ce")
ADAMW_KERNELS = ("fused", "loop")


def option(default: Any = None, help: str = "", choices: tuple | None = None,
           factory: Any = None, flag: bool = True):
    """A TrainConfig field with its help text (and choices) for the generated CLI flag;
    flag=False keeps a field out of the command line."""
    metadata = {"help": help, "choices": choices, "flag": flag}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class TrainConfig:
    task: str = option("iterater", "task name (`python -m benchmark list`)")
    strategy: str = option("ir-tuning", "strategy name (`python -m benchmark list`)")
    strategy_options: dict[str, Any] = option(factory=dict, flag=False)  # --option KEY=VALUE
    model: str = option(DEFAULT_MODEL, "model alias, local folder or hub id")
    data_dir: str | None = option(None, "corpora folder (default: $BENCHMARK_DATA_DIR, "
                                        "else the per-user cache)")
    seed: int = option(0, "seed of the head, the data order and the strategy's draws")
    max_steps: int = option(300, "optimizer steps")
    epochs: float | None = option(None, "epochs over the train split; overrides --max-steps")
    batch_size: int = option(16, "global batch (split over data-parallel workers)")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    lr: float | None = option(None, "learning rate (default: the strategy's)")
    head_lr: float | None = option(None, "learning rate of the classification head when other "
                                         "parameters train too (default: lr)")
    warmup_steps: int | None = option(None, "linear warm-up steps (default: 10%% of the steps)")
    weight_decay: float = option(0.0, "AdamW weight decay (the reference's: 0)")
    loss: str = option("ce", "ce (plain cross-entropy, the reference's) or balanced-ce (weighted "
                             "by inverse class frequency in the train split)", choices=LOSSES)
    adamw: str = option("fused", "the loop's AdamW kernel: fused (all tensors of a step in one "
                                 "kernel, the transformers Trainer's default) or loop (one "
                                 "tensor at a time, torch's CPU default)", choices=ADAMW_KERNELS)
    # How a step computes (benchmark/trial/kernels.py). A suite that pins none of them trains
    # as every trial before them did (kernels.LEGACY_KERNELS), so its trial keys keep meaning.
    attention: str = option("auto", "attention kernel: sdpa, eager, or auto (the faster one "
                                    "measured for the device and model)", choices=ATTENTION_CHOICES)
    dropout_masks: str = option("fast", "fast (CPU masks from 16-bit slices of 64-bit random "
                                        "words, p to within 1/65536) or torch (bernoulli_)",
                                choices=DROPOUT_MASKS)
    frozen_weights: str = option("compute", "never-trained linear weights stored in the autocast "
                                            "dtype (compute) or kept in fp32", choices=FROZEN_WEIGHTS)
    lora_input_cast: str = option("none", "none (each LoRA adapter takes its input in the dtype "
                                          "it arrives in; CPU only with fast masks) or adapter "
                                          "(peft's cast to the adapter's fp32 weights)",
                                  choices=LORA_INPUT_CASTS)
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: no clipping)")
    # The reference pads to 256; 128 keeps CPU runs affordable (p90 = 143 tokens on IteraTeR).
    max_length: int = option(128, "tokens per example, truncated beyond")
    input_format: str | None = option(None, "pair, instruction or diff (default: the model's)",
                                      choices=INPUT_FORMATS)
    eval_every: int = option(50, "evaluate dev every N steps")
    eval_from: int = option(0, "skip the dev evaluations before this step (the last step is "
                               "always evaluated)")
    eval_batch_size: int = option(64, "batch size of evaluation")
    # The learning curve (steps and seconds to a target) needs evaluations more often than
    # model selection does; a fixed dev subset keeps them cheap.
    curve_every: int = option(0, "evaluate the learning curve on a fixed dev subset every N "
                                 "steps (0: no curve)")
    curve_limit: int | None = option(None, "rows of the learning curve's dev subset, the same "
                                           "rows for every run (default: all dev rows)")
    train_limit: int | None = option(None, "train rows (a seeded random slice; default: all)")
    eval_limit: int | None = option(None, "dev rows to evaluate on (default: all)")
    test_limit: int | None = option(None, "test rows (default: all)")
    precision: str = option("auto", "auto (bf16 on GPUs and on CPUs that compute it natively, "
                                    "else fp32), fp32, bf16 or fp16 (autocast)", choices=PRECISIONS)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    converge_tolerance: float = option(DEFAULT_CONVERGE_TOLERANCE,
                                       "steps-to-converge: within this share of the best dev F1")
    deepspeed: str = option("none", "DeepSpeed ZeRO stage (configs in cluster/deepspeed/)",
                            choices=DEEPSPEED_CHOICES)

    def __post_init__(self):
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.eval_every < 1:
            raise UserError("max_steps, batch_size, grad_accum and eval_every must be at least 1")
        if self.curve_every < 0 or (self.curve_limit is not None and self.curve_limit < 1):
            raise UserError("curve_every must be 0 or more and curve_limit at least 1")
        if self.eval_from < 0:
            raise UserError("eval_from must be 0 or more")
        if self.epochs is None and self.eval_from > self.max_steps:
            raise UserError(f"eval_from ({self.eval_from}) is past max_steps ({self.max_steps}): "
                            "only the last step would be evaluated")
        if self.epochs is not None and self.epochs <= 0:
            raise UserError("epochs must be positive")
        for name in ("precision", "deepspeed", "input_format", "loss", "adamw", "attention",
                     "dropout_masks", "frozen_weights", "lora_input_cast"):
            allowed = dataclasses_field(name).metadata["choices"]
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = set(field_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown training option {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**values)


def dataclasses_field(name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(TrainConfig) if f.name == name)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def add_flags(parser) -> None:
    """One `--flag` per TrainConfig field (defaults stay None: only given values override)."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if not field.metadata.get("flag", True):
            continue
        kind = _scalar(hints[field.name])
        default = field.default if field.default is not dataclasses.MISSING else None
        help_text = field.metadata.get("help", "")
        if default is not None:
            help_text += f" (default: {default})"
        parser.add_argument("--" + field.name.replace("_", "-"), type=kind, default=None,
                            choices=field.metadata.get("choices"), help=help_text)


def _scalar(hint) -> type:
    """int for `int` and `int | None`, and so on."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if args else hint
    if kind not in (int, float, str):
        raise TypeError(f"no flag type for {hint!r}")
    return kind


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device} asked for, but torch sees no GPU")
    return device


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AMX, or AVX512-BF16), as torch
    reports it; elsewhere bf16 autocast is emulated and slower than fp32."""
    import torch

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: str, deepspeed: str = "none"):
    """(precision name, autocast dtype or None, use a GradScaler). `auto` takes bf16 where
    the hardware computes it (measured here: bf16 autocast trains MiniLM 1.3-1.5x faster
    than fp32, same F1), fp16 on older GPUs, fp32 on other CPUs and under DeepSpeed on a
    CPU (its bf16 mode casts the model and its optimizer, a GPU path)."""
    import torch

    if precision == "auto":
        if device.startswith("cuda"):
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_computes_bf16() and deepspeed == "none" else "fp32"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return precision, dtype, precision == "fp16"
