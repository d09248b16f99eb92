"""How a training step computes, beyond what the strategy decides: the attention kernel, how
dropout masks are drawn and the dtype of weights that never train. Each choice is a
`TrainConfig` field; the ones that change numerics or the random stream are pinned in a
suite's budget, so they enter its trial keys (results/perf.md section 8 measures them).

- `dropout_masks: fast` draws every dropout mask on the CPU from 16-bit slices of 64-bit
  random words (four masks' worth per generator call) instead of `bernoulli_`, whose CPU
  kernel draws a double per element on one thread. The mask is an exact Bernoulli draw
  with keep probability 1 - round(65536 p) / 65536 (|change in p| <= 7.6e-6) and the
  kept values are scaled by its inverse, so the layer stays unbiased. One mask per
  dropout call, as before: peft's LoRA dropout still draws one per target.
  On a GPU, torch's own kernel is kept (its Philox generator is already fast).
- `attention: eager` computes attention with plain matmuls and softmax (and, with fast
  masks, draws the attention-probability dropout the same way); `sdpa` is torch's fused
  kernel; `auto` takes the faster of the two as measured per device, precision and model
  (see `preferred_attention`).
- `lora_input_cast: none` hands each LoRA adapter its input in the dtype it arrives in;
  peft's default (`adapter`) first casts it to the adapter's fp32 weights, so under bf16
  autocast the down projection's bf16 input is copied to fp32, dropped out in fp32 and
  cast back to bf16 by autocast for the adapter's first matmul, and the same again in
  backward. With the fast masks both paths round x * 1/(1-p), computed in fp32, to bf16
  once: the same bits (a 60-step SmolLM2 run, results/perf.md section 11); elsewhere they
  differ at most by a second rounding. Only where the dropout scales in fp32 arithmetic
  (the fast masks, or a GPU): torch's CPU dropout of a bf16 tensor rounds 1/(1-p) to bf16
  (1/0.95 -> 1.0547), a 0.2% bias.
- `frozen_weights: compute` stores the weights of linear layers that no optimizer holds
  (LoRA's base weights) in the autocast dtype: they never update, so they need no fp32
  master copy, and autocast otherwise casts each of them again at every call (it caches
  casts only for weights that require gradients).
"""

from __future__ import annotations

ATTENTION_CHOICES = ("auto", "sdpa", "eager")
DROPOUT_MASKS = ("fast", "torch")
FROZEN_WEIGHTS = ("compute", "fp32")
LORA_INPUT_CASTS = ("none", "adapter")

# The code path of every committed trial file before these choices existed. A suite that
# does not pin a choice trains with these, so its trial keys keep meaning what they meant.
LEGACY_KERNELS = {"attention": "sdpa", "dropout_masks": "torch", "frozen_weights": "fp32",
                  "lora_input_cast": "adapter"}

EAGER = "benchmark_eager"  # registered with transformers under this name
_MASK_BITS = 16
_MASK_LEVELS = 1 << _MASK_BITS


def keep_mask(shape, p: float, device="cpu"):
    """(uint8 0/1 mask, scale): a Bernoulli keep-mask of `shape` with drop probability p
    rounded to a multiple of 1/65536, and 1 / its keep probability. Draws from torch's
    default CPU generator, so a seeded run repeats its masks. (uint8, not bool: torch's CPU
    kernels convert and multiply bool tensors several times slower.)"""
    import math

    import torch

    threshold = round(p * _MASK_LEVELS)  # drop when the 16-bit draw falls below it
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(1 << 63), None)  # all 64 bits uniform: four independent 16-bit draws
    draws = words.view(torch.int16)[:count].view(shape)
    keep = torch.empty(shape, dtype=torch.uint8, device=device)
    torch.ge(draws, threshold - _MASK_LEVELS // 2, out=keep)  # int16 runs from -32768
    return keep, _MASK_LEVELS / (_MASK_LEVELS - threshold)


class _MaskedScale:
    """x * mask * scale, keeping only the one-byte mask for backward (as torch's dropout
    does). x times the Python float scale computes in fp32 arithmetic whatever x's dtype,
    so a bf16 input is not scaled by 1/(1-p) rounded to bf16 (as a bf16 mask holding the
    scale, or an in-place multiply, would be); fp32 inputs get the same bits as before."""

    function = None

    @classmethod
    def apply(cls, x, mask, scale):
        if cls.function is None:
            import torch

            class MaskedScale(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x, mask, scale):
                    ctx.save_for_backward(mask)
                    ctx.scale = scale
                    return (x * scale).mul_(mask.to(x.dtype))

                @staticmethod
                def backward(ctx, grad):
                    (mask,) = ctx.saved_tensors
                    return (grad * ctx.scale).mul_(mask.to(grad.dtype)), None, None

            cls.function = MaskedScale
        return cls.function.apply(x, mask, scale)


def fast_dropout(x, p: float, training: bool = True):
    """`F.dropout` with the mask drawn by `keep_mask` on a CPU; torch's dropout elsewhere."""
    import torch.nn.functional as F

    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    keep, scale = keep_mask(x.shape, p)
    return _MaskedScale.apply(x, keep, scale)


def _fast_dropout_module():
    from torch import nn

    class FastDropout(nn.Dropout):
        """nn.Dropout (same `p`, same place in the model) whose CPU mask is `keep_mask`'s."""

        def forward(self, x):
            return fast_dropout(x, self.p, self.training)

    return FastDropout


def use_fast_dropout(model) -> int:
    """Swap every nn.Dropout in the model (its own and peft's LoRA dropouts) for FastDropout;
    returns how many were swapped."""
    from torch import nn

    fast = _fast_dropout_module()
    swapped = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                replacement = fast(child.p, child.inplace)
                replacement.train(child.training)
                setattr(module, name, replacement)
                swapped += 1
    return swapped


def eager_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                    fast_masks: bool = False, **kwargs):
    """transformers' eager attention (BERT's and Llama's, which differ only in grouped
    key/value heads), with the attention-probability dropout drawn by `fast_dropout` when
    `fast_masks`."""
    import torch
    import torch.nn.functional as F

    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: each key/value head serves `groups` heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask[:, :, :, : key.shape[-2]]
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    training = module.training and dropout > 0.0
    weights = fast_dropout(weights, dropout, training) if fast_masks else \
        F.dropout(weights, dropout, training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def _register_eager(fast_masks: bool) -> str:
    """Register `eager_attention` with transformers (and its additive mask format)."""
    import functools

    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    name = f"{EAGER}_fast" if fast_masks else EAGER
    AttentionInterface.register(name, functools.partial(eager_attention, fast_masks=fast_masks))
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, eager_mask)
    return name


def preferred_attention(device: str, model, autocast_dtype=None) -> str:
    """`auto`'s choice, from measured step times: on a CPU, eager when the model drops
    attention probabilities in training (BERT: sdpa draws that mask with `bernoulli_`,
    eager with the fast masks; results/perf.md section 8) or under bf16/fp16 autocast (the
    CPU flash-attention backward was 22% of a SmolLM2 step at 72 tokens on an Intel Xeon
    with AMX, and eager attention made the step 1.16x faster: issue 29's measurement);
    sdpa otherwise (GPUs; Llama in fp32, where the two ran within noise here)."""
    dropout = getattr(model.config, "attention_probs_dropout_prob", 0.0) or 0.0
    on_cpu = device.startswith("cpu")
    return "eager" if on_cpu and (dropout > 0.0 or autocast_dtype is not None) else "sdpa"


def set_attention(model, attention: str, device: str, fast_masks: bool, autocast_dtype=None) -> str:
    """Switch the model's attention kernel; returns the kernel it ended with."""
    if attention == "auto":
        attention = preferred_attention(device, model, autocast_dtype)
    if attention == "eager":
        model.set_attn_implementation(_register_eager(fast_masks))
    elif getattr(model.config, "_attn_implementation", "sdpa") != "sdpa":
        model.set_attn_implementation("sdpa")
    return attention


def frozen_linear_weights(model, optimizer) -> list:
    """Weights and biases of linear layers that no optimizer group holds: they never train."""
    from torch import nn

    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return [p for module in model.modules() if isinstance(module, nn.Linear)
            for p in module.parameters(recurse=False)
            if id(p) not in held and not p.requires_grad]


def store_frozen_in(model, optimizer, dtype) -> int:
    """Store never-trained linear weights in `dtype` (the autocast dtype); returns the
    number of values converted."""
    import torch

    converted = 0
    with torch.no_grad():
        for param in frozen_linear_weights(model, optimizer):
            if param.dtype != dtype:
                param.data = param.data.to(dtype)
                converted += param.numel()
    return converted


def keep_lora_input_dtype(model) -> int:
    """Turn off peft's cast of each LoRA adapter's input to the adapter's weight dtype;
    returns the number of adapter layers changed."""
    changed = 0
    for module in model.modules():
        if getattr(module, "cast_input_dtype_enabled", False) is True:
            module.cast_input_dtype_enabled = False
            changed += 1
    return changed


def apply_kernels(model, optimizer, *, attention: str, dropout_masks: str, frozen_weights: str,
                  device: str, autocast_dtype, lora_input_cast: str) -> dict:
    """Apply a trial's kernel choices to its prepared model; returns what was applied (for
    the result record)."""
    on_cpu = device.startswith("cpu")
    fast_masks = dropout_masks == "fast" and on_cpu
    applied = {"attention": set_attention(model, attention, device, fast_masks, autocast_dtype),
               "dropout_masks": "fast" if fast_masks else "torch",
               "fast_dropout_layers": use_fast_dropout(model) if fast_masks else 0,
               "frozen_weights": "fp32", "frozen_values_converted": 0,
               "lora_input_cast": "adapter", "lora_layers_uncast": 0}
    if lora_input_cast == "none" and (fast_masks or not on_cpu):
        applied["lora_layers_uncast"] = keep_lora_input_dtype(model)
        applied["lora_input_cast"] = "none"
    if frozen_weights == "compute" and autocast_dtype is not None:
        applied["frozen_values_converted"] = store_frozen_in(model, optimizer, autocast_dtype)
        applied["frozen_weights"] = str(autocast_dtype).removeprefix("torch.")
    return applied
