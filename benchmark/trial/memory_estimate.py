"""Peak training memory by category (parameters, buffers, gradients, activations,
temporaries, optimizer state) without weights: the project's own model, strategy, optimizer
and training step run on fake tensors (`FakeTensorMode`), counted by torch's `MemTracker`.

    estimate_memory("llama-3.1-8b", "lora", batch_size=16, max_length=256, precision="bf16")

How a step is estimated (`estimate_memory`):
1. The model is built on the meta device from its architecture (a shipped config,
   `model_configs.py`, a random-weight alias, or a local folder's config.json), in the dtype
   a real trial would load (the checkpoint's), and the strategy's own `prepare` runs on it
   (peft's adapters included). Its parameters and buffers are then replaced by fake
   tensors, and every reference the strategy holds to them is remapped (`materialise`).
2. The trial's optimizer and schedule are built by `build.setup_optimization`, as in a trial.
3. A horizon of `steps` optimizer steps runs through the loop's own `step.optimizer_step`
   with the real strategy hooks (`before_step`, `after_backward`, freezing, optimizer state
   kept, dropped or offloaded, BAdam's reset, IST's probes), but with a stand-in for the
   model's forward that gives every parameter that trains in that step its gradient: it is
   cheap, and it lets the optimizer state grow exactly as the strategy makes it grow.
   Data-dependent reads (`.item()`, `.tolist()`, `bool(t)`: gradient scores, losses) answer
   seeded random numbers, so a score-driven strategy chooses as it would from random
   scores (IR-Tuning's first step).
4. The step of the horizon with the largest footprint (the most blocks on the gradient
   path, then the most gradient bytes, then the most optimizer state, then the latest) is
   replayed from a fresh start and run with the real forward and backward on a fake batch
   of `batch_size x max_length` tokens (no padding), under `MemTracker`: its peak, and the
   split by category at that moment, is the estimate.

What it leaves out: what a GPU adds around the tensors (CUDA context, caching-allocator
rounding and reserve, cuBLAS/attention workspaces), and tensors a kernel allocates outside
torch's dispatcher. The GPU proof (`benchmark.tools.gpu_proof`) measures those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
import types
from typing import Any

from .memory import CATEGORIES, tensor_tracker
from .model_configs import MODEL_CONFIGS, shipped_config_name

MIB = 1024 * 1024
GIB = 1024 * MIB
NUM_LABELS = 5  # IteraTeR's classes: only the head's size depends on it


# -- the model on the meta device -------------------------------------------------------------
def _dtype(name: str | None):
    import torch

    return {None: None, "auto": None, "float32": torch.float32, "fp32": torch.float32,
            "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
            "fp16": torch.float16}[name]


def meta_model(model: str, num_labels: int = NUM_LABELS, weights_dtype: str | None = None):
    """(sequence classifier on the meta device, description of where its shape came from).

    `weights_dtype` None/"auto": the dtype a trial of this project would load (the
    checkpoint's for pretrained models, float32 for random-weight aliases)."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from . import models

    transformers.logging.set_verbosity_error()
    shipped = shipped_config_name(model)
    if shipped is not None:
        values = dict(MODEL_CONFIGS[shipped]["config"])
        model_type = values.pop("model_type")
        dtype = _dtype(weights_dtype) or _dtype(values.get("dtype"))
        config = AutoConfig.for_model(model_type, num_labels=num_labels, **values)
        source = f"{shipped} (shipped config of {MODEL_CONFIGS[shipped]['hub']})"
    elif model in models.MODELS and models.MODELS.get(model).random_weights:
        with torch.device("meta"):
            net, tokenizer = models.MODELS.get(model).build(num_labels)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        net.config.pad_token_id = tokenizer.pad_token_id
        if weights_dtype not in (None, "auto"):
            net.to(_dtype(weights_dtype))
        return net, f"{model} (random-weight alias, built as a trial builds it)"
    else:
        config = AutoConfig.from_pretrained(model, num_labels=num_labels)
        dtype = _dtype(weights_dtype) or getattr(config, "dtype", None) or torch.float32
        source = f"{model} (config.json)"
    if getattr(config, "pad_token_id", None) is None:  # as load_model: pad with eos
        eos = getattr(config, "eos_token_id", None)
        config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    dtype = dtype if isinstance(dtype, torch.dtype) else _dtype(str(dtype)) or torch.float32
    with torch.device("meta"):
        net = AutoModelForSequenceClassification.from_config(config, dtype=dtype)
    return net, source


def materialise(model, strategy, fake_mode=None) -> dict[int, Any]:
    """Replace the model's meta parameters and buffers by fake tensors of the same shape,
    dtype and requires_grad (tied ones stay tied), and remap every reference to them that
    the strategy holds (its lists of block and head parameters, its ModelParts). Returns
    {id(old parameter): new parameter}."""
    import torch
    from torch import nn

    import contextlib

    memo: dict[int, Any] = {}
    # fake_mode None: real CPU tensors (zeros), for checking the fake count against a real one
    with fake_mode if fake_mode is not None else contextlib.nullcontext():
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is None:
                    continue
                if id(p) not in memo:
                    memo[id(p)] = nn.Parameter(torch.zeros(p.shape, dtype=p.dtype),
                                               requires_grad=p.requires_grad)
                module._parameters[name] = memo[id(p)]
            for name, b in list(module._buffers.items()):
                if b is None:
                    continue
                if id(b) not in memo:
                    memo[id(b)] = torch.zeros(b.shape, dtype=b.dtype)
                module._buffers[name] = memo[id(b)]
    _remap(strategy, memo, set())
    return memo


def _remap(obj, memo: dict[int, Any], seen: set[int]):
    """obj with every tensor in memo replaced, containers and dataclasses rebuilt in place
    where they are mutable; modules, arrays and other objects are left alone."""
    import torch
    from torch import nn

    if isinstance(obj, torch.Tensor):
        return memo.get(id(obj), obj)
    if isinstance(obj, nn.Module) or id(obj) in seen:
        return obj
    if isinstance(obj, list):
        seen.add(id(obj))
        obj[:] = [_remap(v, memo, seen) for v in obj]
        return obj
    if isinstance(obj, tuple):
        return type(obj)(_remap(v, memo, seen) for v in obj) if not hasattr(obj, "_fields") \
            else type(obj)(*(_remap(v, memo, seen) for v in obj))
    if isinstance(obj, dict):
        seen.add(id(obj))
        for key in list(obj):
            obj[key] = _remap(obj[key], memo, seen)
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type) or hasattr(obj, "__dict__") \
            and type(obj).__module__.split(".")[0] in ("strategies", "benchmark"):
        seen.add(id(obj))
        for key, value in list(vars(obj).items()):
            try:
                setattr(obj, key, _remap(value, memo, seen))
            except (AttributeError, dataclasses.FrozenInstanceError):
                pass
        return obj
    return obj


# -- fake-mode helpers --------------------------------------------------------------------------
def _placeholder_mode(seed: int):
    """A dispatch mode that answers data-dependent reads of fake tensors (`.item()`,
    `.tolist()`, `bool(t)`) with seeded values: floats uniform in [0, 1), booleans True,
    integers 0."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily
    from torch.utils import _pytree as pytree
    from torch.utils._python_dispatch import TorchDispatchMode

    class Placeholders(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.rng = random.Random(seed)

        def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
            if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default) \
                    and (isinstance(args[0], FakeTensor) or args[0].is_meta):
                dtype = args[0].dtype
                if dtype == torch.bool:
                    return True
                return self.rng.random() if dtype.is_floating_point else 0
            if func is torch.ops.aten._to_copy.default and args[0].device.type == "meta" \
                    and torch.device((kwargs or {}).get("device") or "meta").type != "meta":
                # .tolist() of a meta tensor copies it to the CPU first: seeded values
                shape, dtype = args[0].shape, (kwargs or {}).get("dtype") or args[0].dtype
                if dtype == torch.bool:
                    return torch.ones(shape, dtype=dtype)
                if not dtype.is_floating_point:
                    return torch.zeros(shape, dtype=dtype)
                values = [self.rng.random() for _ in range(args[0].numel())]
                return torch.tensor(values, dtype=dtype).reshape(shape)
            tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            if tensors and not any(isinstance(t, FakeTensor) or t.is_meta for t in tensors):
                # the strategy's own bookkeeping on real tensors (IST's scores): for real
                with unset_fake_temporarily():
                    return func(*args, **(kwargs or {}))
            return func(*args, **(kwargs or {}))

    return Placeholders()


@contextlib.contextmanager
def _eager_masks():
    """transformers builds attention masks differently when it sees a fake tensor (it takes
    it for a compile trace and always materialises the mask); a real trial runs eagerly, so
    fake tensors are not taken for a trace here. Its checks of the mask's values are then
    answered by the placeholders (`all()` is True: the estimate's batches have no padding)."""
    import transformers.masking_utils as masking

    traced = masking.is_tracing
    masking.is_tracing = lambda tensor=None: traced(None)
    try:
        yield
    finally:
        masking.is_tracing = traced


# -- the step ---------------------------------------------------------------------------------
class _GradientsOnly:
    """Stands in for the model during the horizon: no forward pass (with
    `_gradients_only_backend`, backward gives the parameters that train their gradients)."""

    def __init__(self):
        self.training = True

    def __call__(self, **batch):
        import torch

        return types.SimpleNamespace(loss=torch.zeros(()), logits=None)

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)


def _gradients_only_backend(params):
    """The loop's LocalBackend, but backward gives each parameter that requires a gradient
    an (empty) gradient of its shape instead of differentiating a loss."""
    import torch

    from .backends import LocalBackend

    class GradientsOnlyBackend(LocalBackend):
        def backward(self, loss, scaler=None) -> None:
            for p in params:
                if p.requires_grad and p.grad is None:
                    p.grad = torch.empty_like(p)

    return GradientsOnlyBackend()


class StateRecorder:
    """Stands in for the optimizer during the horizon. It shares the real optimizer's
    parameter groups (so the strategy marks them frozen or not as in a trial) and keeps a
    `state` entry for every parameter the real optimizer would hold state for: one that had
    a gradient in a group not marked frozen. The strategy's own code pops, offloads and
    clears these entries (optimizer_state drop/offload, BAdam's switch) as it would the real
    ones. `realise` then makes the real optimizer create its state for exactly those."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups
        self.defaults = optimizer.defaults
        self.state: dict = {}

    def step(self, closure=None):
        for group in self.param_groups:
            if group.get("frozen", False):
                continue
            for p in group["params"]:
                if p.grad is not None:
                    self.state.setdefault(p, {"recorded": True})

    def zero_grad(self, set_to_none: bool = True):
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None


_TOKEN_BATCH: dict = {}  # what the stand-in model is given: it reads nothing


class _CheapProbes:
    """IST's probes during the horizon: a batch and a seeded random loss, no forward."""

    def __init__(self, batch: dict, seed: int):
        self.batch = batch
        self.rng = random.Random(seed)

    def probe_batch(self) -> dict:
        return self.batch

    def loss_without_grad(self, batch: dict) -> float:
        return 1.0 + self.rng.random()


def fake_batch(batch_size: int, max_length: int) -> dict:
    """A full-length batch (every attention mask 1); fake tensors hold no token values."""
    import torch

    ids = torch.ones(batch_size, max_length, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.zeros(batch_size, dtype=torch.long)}


@dataclasses.dataclass
class StepFeatures:
    step: int
    selected: list[int] | None
    path_blocks: int  # blocks between the lowest one that trains and the head
    grad_bytes: int  # bytes of the parameters that train in the step
    state_param_bytes: int  # bytes of the parameters holding optimizer state after it
    state_blocks: int  # blocks holding optimizer state after the step

    def key(self):
        return (self.path_blocks, self.grad_bytes, self.state_param_bytes, self.step)


def _nbytes(t) -> int:
    return t.numel() * t.element_size()


def _features(step: int, strategy, state: dict) -> StepFeatures:
    parts = strategy.parts
    num_blocks = len(parts.blocks)
    if any(p.requires_grad for p in parts.embeddings):
        lowest = 0
    else:
        lowest = next((i for i, block in enumerate(parts.blocks)
                       if any(p.requires_grad for p in block.parameters())), num_blocks)
    owner = {id(p): i for i, block in enumerate(parts.blocks) for p in block.parameters()}
    held = [p for p, entry in state.items() if entry]
    selected = getattr(strategy, "selected", None)
    return StepFeatures(step=step, selected=list(selected) if selected is not None else None,
                        path_blocks=num_blocks - lowest,
                        grad_bytes=sum(_nbytes(p) for p in strategy.model.parameters()
                                       if p.requires_grad),
                        state_param_bytes=sum(_nbytes(p) for p in held),
                        state_blocks=len({owner[id(p)] for p in held if id(p) in owner}))


@dataclasses.dataclass
class _Setup:
    config: Any
    model: Any
    strategy: Any
    optimizer: Any  # the real one (what the tracked step steps)
    recorder: StateRecorder
    scheduler: Any
    autocast_dtype: Any
    placeholders: Any
    source: str
    total_params: int
    trainable_params: int


def _set_up(model_name: str, strategy_name: str, options: dict, *, batch_size: int,
            max_length: int, precision: str, steps: int, seed: int, weights_dtype: str | None,
            lr: float | None, adamw: str) -> _Setup:
    """Model, strategy and the trial's optimizer, all on the meta device."""
    import torch

    from strategies import get_strategy

    from .backends import LocalBackend
    from .build import setup_optimization
    from .config import TrainConfig, resolve_precision

    config = TrainConfig(model=model_name, strategy=strategy_name, strategy_options=dict(options),
                         batch_size=batch_size, max_length=max_length, precision=precision,
                         max_steps=steps, device="cpu", seed=seed, lr=lr, adamw=adamw)
    _, autocast_dtype, _ = resolve_precision(precision, "cpu")
    strategy = get_strategy(strategy_name, options, seed=seed)
    torch.manual_seed(seed)
    net, source = meta_model(model_name, NUM_LABELS, weights_dtype)
    placeholders = _placeholder_mode(seed)
    import torch.fx.experimental._config as fx_config

    # A strategy may read the weights (spectrum ranks them by their singular values): the
    # placeholders answer, and a boolean mask of meta values is taken as all true.
    with placeholders, fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        net = strategy.prepare(net)
    rate = lr if lr is not None else strategy.default_lr
    net, optimizer, scheduler = setup_optimization(net, strategy, LocalBackend(), config, rate,
                                                   max(1, steps // 10))
    recorder = StateRecorder(optimizer)
    strategy.attach(recorder)
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in strategy.trainable_params())
    return _Setup(config, net, strategy, optimizer, recorder, scheduler, autocast_dtype,
                  placeholders, source, total, trainable)


def _cheap_step(s: _Setup, step: int, probes) -> None:
    """One step of the horizon on the meta device: the strategy's hooks and the loop's step,
    gradients handed out instead of computed, the optimizer's state recorded, not made."""
    from .step import optimizer_step

    s.strategy.attach_runtime(probes)
    optimizer_step(_GradientsOnly(), s.strategy, s.recorder, [_TOKEN_BATCH], step, device="cpu",
                   autocast_dtype=None, max_grad_norm=0.0,
                   backend=_gradients_only_backend(list(s.model.parameters())))


def _to_fake(s: _Setup, fake_mode) -> None:
    """Parameters and buffers become fake tensors; the strategy's, the optimizer's and the
    recorder's references follow."""
    memo = materialise(s.model, s.strategy, fake_mode)
    for group in s.optimizer.param_groups:
        group["params"] = [memo.get(id(p), p) for p in group["params"]]
    s.recorder.state = {memo.get(id(p), p): entry for p, entry in s.recorder.state.items()}
    offloaded = getattr(s.strategy, "_offloaded", None)
    if offloaded:
        s.strategy._offloaded = {memo.get(id(p), p): v for p, v in offloaded.items()}


def _realise_state(s: _Setup) -> None:
    """The real optimizer creates its state for the parameters the recorder holds (one
    step of it over them, gradients empty), then the strategy holds the real optimizer."""
    import torch

    held = {id(p) for p, entry in s.recorder.state.items() if entry}
    frozen = [group.get("frozen", False) for group in s.optimizer.param_groups]
    for group in s.optimizer.param_groups:
        group["frozen"] = False
        for p in group["params"]:
            if id(p) in held:
                p.grad = torch.zeros_like(p)  # zeros: real tensors' SVDs (GaLore) must converge
    if held:
        s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    for group, was in zip(s.optimizer.param_groups, frozen):
        group["frozen"] = was
    s.strategy.attach(s.optimizer)


def _tracked_step(s: _Setup, step: int, batch: dict) -> dict[str, Any]:
    import itertools

    from .backends import LocalBackend
    from .build import ProbeRuntime, Trial
    from .step import optimizer_step

    backend = LocalBackend()
    trial = Trial(config=s.config, model=s.model, tokenizer=None, strategy=s.strategy,
                  optimizer=s.optimizer, scheduler=s.scheduler, backend=backend, device="cpu",
                  precision=s.config.precision, autocast_dtype=s.autocast_dtype, scaler=None,
                  lr=0.0, warmup=0, input_format="", total_params=s.total_params)
    s.strategy.attach_runtime(ProbeRuntime(trial, itertools.repeat(batch)))
    tracker = tensor_tracker()
    tracker.track_external(s.model, s.optimizer, *batch.values())
    s.model.train()
    with tracker:
        optimizer_step(s.model, s.strategy, s.optimizer, [batch], step, device="cpu",
                       autocast_dtype=s.autocast_dtype, max_grad_norm=s.config.max_grad_norm,
                       backend=backend)
    categories = tracker.categories("peak")
    return {"peak_bytes": sum(categories.values()), "categories": categories,
            "peak_phase": tracker.peak_phase,
            "after_step_bytes": sum(tracker.categories("current").values())}


def estimate_memory(model: str, strategy: str, options: dict | None = None, *,
                    batch_size: int = 16, max_length: int = 256, precision: str = "bf16",
                    steps: int = 100, seed: int = 0, weights_dtype: str | None = None,
                    lr: float | None = None, adamw: str = "fused",
                    real: bool = False) -> dict[str, Any]:
    """The peak of a training step, by category, in bytes (see the module's docstring).
    `real`: the same step on real CPU tensors (zeros) instead of fake ones, to check the
    estimate; it allocates the memory it counts.

    `steps`: the horizon of optimizer steps whose strategy decisions (which blocks train,
    which hold optimizer state) are replayed before the measured step, which is the
    horizon's largest. Returns the figures and what was measured."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    options = dict(options or {})
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, not {precision!r}")
    steps = max(1, steps)
    from strategies import strategy_class

    if not strategy_class(strategy).layerwise:  # the same blocks train at every step
        steps = min(steps, 2)
    started = time.perf_counter()
    common = dict(batch_size=batch_size, max_length=max_length, precision=precision, steps=steps,
                  seed=seed, weights_dtype=weights_dtype, lr=lr, adamw=adamw)
    meta_batch = {k: v.to("meta") for k, v in fake_batch(batch_size, max_length).items()}

    # Pass 1: the horizon, on the meta device; which step is the largest.
    s = _set_up(model, strategy, options, **common)
    probes = _CheapProbes(meta_batch, seed)
    features: list[StepFeatures] = []
    with s.placeholders:
        for step in range(steps):
            _cheap_step(s, step, probes)
            features.append(_features(step, s.strategy, s.recorder.state))
    target = max(features, key=StepFeatures.key)
    dominates = all(target.path_blocks >= f.path_blocks and target.grad_bytes >= f.grad_bytes
                    and target.state_param_bytes >= f.state_param_bytes for f in features)
    horizon_s = time.perf_counter() - started

    # Pass 2: a fresh start replayed up to that step, which then runs for real on fake tensors.
    s = _set_up(model, strategy, options, **common)
    probes = _CheapProbes(meta_batch, seed)
    with s.placeholders:
        for step in range(target.step):
            _cheap_step(s, step, probes)
    # allow_non_fake_inputs: a real bookkeeping tensor (IST's scores) may meet a fake one
    fake_mode = None if real else FakeTensorMode(allow_non_fake_inputs=True)
    _to_fake(s, fake_mode)
    rss: dict[str, Any] = {}
    if real:  # the process's resident memory around the same step, beside the tensor count
        import psutil

        from .memory import MIB as _MIB, PeakMemorySampler

        rss["rss_before_tensors_mib"] = round(psutil.Process().memory_info().rss / _MIB, 1)
    with fake_mode or contextlib.nullcontext(), s.placeholders, _eager_masks():
        _realise_state(s)
        batch = fake_batch(batch_size, max_length)
        if real:
            rss["rss_before_step_mib"] = round(psutil.Process().memory_info().rss / _MIB, 1)
            with PeakMemorySampler("cpu", interval_s=0.005) as sampler:
                measured = _tracked_step(s, target.step, batch)
            rss["rss_peak_mib"] = sampler.result()["peak_memory_mb"]
            rss["rss_after_step_mib"] = round(psutil.Process().memory_info().rss / _MIB, 1)
        else:
            measured = _tracked_step(s, target.step, batch)
        after = _features(target.step, s.strategy, s.optimizer.state)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in s.model.parameters()})
    return {
        "model": model, "model_source": s.source, "strategy": strategy,
        "options": s.strategy.describe(), "batch_size": batch_size, "max_length": max_length,
        "precision": precision, "weights_dtype": "/".join(dtypes), "torch": torch.__version__,
        "tensors": "real" if real else "fake",
        "steps": steps, "measured_step": target.step + 1, "measured_step_dominates": dominates,
        "selected_blocks": after.selected, "num_blocks": len(s.strategy.parts.blocks),
        "path_blocks": after.path_blocks, "blocks_with_optimizer_state": after.state_blocks,
        "total_params": s.total_params, "trainable_params": s.trainable_params,
        **measured, **rss,
        "seconds": round(time.perf_counter() - started, 1), "horizon_seconds": round(horizon_s, 1),
    }


# -- the `memory` command ---------------------------------------------------------------------
PAPER_LORA = {"lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.05,
              "target_modules": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]}
TABLE_COLUMNS = ("parameters", "gradients", "optimizer_state", "activations", "temporaries")


def strategy_options(strategy: str, options: dict, paper_lora: bool) -> dict:
    """The options given, plus the paper's LoRA (r 32, alpha 64, dropout 0.05 on
    q/k/v/up/down) for every strategy that takes LoRA options, with `paper_lora`."""
    from strategies import strategy_class

    fields = {f.name for f in dataclasses.fields(strategy_class(strategy).config_class)}
    out = {k: v for k, v in PAPER_LORA.items() if paper_lora and k in fields}
    out.update({k: v for k, v in options.items() if k in fields})
    return out


def add_memory_command(commands) -> None:
    """`python -m benchmark memory`: the subcommand's flags."""
    memory = commands.add_parser("memory", help="estimate a training step's peak memory by "
                                 "category with fake tensors (no weights, offline)")
    memory.add_argument("--model", default="llama-3.1-8b",
                        help=f"a shipped config ({', '.join(MODEL_CONFIGS)}), a random-weight "
                        "alias, or a folder with a config.json (default: llama-3.1-8b)")
    memory.add_argument("--strategy", action="append", metavar="NAME",
                        help="a strategy, `a,b` or `all` (repeatable; default: all)")
    memory.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="a strategy option, for every strategy that takes it (repeatable)")
    memory.add_argument("--paper-lora", action="store_true",
                        help="the paper's LoRA (r 32, alpha 64, dropout 0.05, q/k/v/up/down) "
                        "for every strategy with LoRA options")
    memory.add_argument("--batch-size", type=int, default=16)
    memory.add_argument("--max-length", type=int, default=256, help="tokens per example")
    memory.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="bf16",
                        help="autocast, as a trial's --precision (default: bf16)")
    memory.add_argument("--weights-dtype", choices=("auto", "fp32", "bf16", "fp16"),
                        default="auto", help="the weights' dtype (auto: as a trial loads them, "
                        "the checkpoint's)")
    memory.add_argument("--steps", type=int, default=100,
                        help="optimizer steps of strategy decisions replayed before the "
                        "measured step (layer-wise strategies; default: 100)")
    memory.add_argument("--seed", type=int, default=0)
    memory.add_argument("--real", action="store_true",
                        help="count the same step on real CPU tensors instead (a check; it "
                        "allocates what it counts)")
    memory.add_argument("--json", type=str, default=None, help="also write the rows here")


def run_memory_command(args, options: dict) -> int:
    """Estimate every strategy asked for; print one table (GiB) and the set-up under it."""
    import json

    from strategies import STRATEGIES

    names: list[str] = []
    for given in args.strategy or ["all"]:
        for name in given.split(","):
            name = name.strip()
            names.extend(STRATEGIES.names() if name == "all" else [name] if name else [])
    for name in names:
        STRATEGIES.get(name)  # an unknown name is one line before anything runs
    rows, failed = [], []
    for name in dict.fromkeys(names):
        try:
            row = estimate_memory(args.model, name, strategy_options(name, options, args.paper_lora),
                                  batch_size=args.batch_size, max_length=args.max_length,
                                  precision=args.precision, steps=args.steps, seed=args.seed,
                                  weights_dtype=args.weights_dtype, real=args.real)
        except Exception as error:  # noqa: BLE001 - one strategy's failure is its row, not the end
            failed.append((name, " ".join(f"{type(error).__name__}: {error}".split())[:300]))
            print(f"  {name}: FAILED: {failed[-1][1]}", flush=True)
            continue
        rows.append(row)
        rss = (f"; RSS {row['rss_before_tensors_mib']:.0f} MiB before the model's tensors, "
               f"{row['rss_before_step_mib']:.0f} before the step, peak {row['rss_peak_mib']:.0f}, "
               f"{row['rss_after_step_mib']:.0f} after it" if args.real else "")
        print(f"  {name}: {row['peak_bytes'] / GIB:.2f} GiB ({row['seconds']:.0f} s){rss}", flush=True)
    print()
    if rows:
        print(memory_table(rows))
    for name, error in failed:
        print(f"{name}: not estimated: {error}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 1 if failed else 0


def memory_table(rows: list[dict], unit: int = GIB, unit_name: str = "GiB") -> str:
    """Markdown: one row per strategy, the peak and its split by category at that moment."""
    first = rows[0]
    header = (["strategy", f"peak {unit_name}"] + [c.replace("_", " ") for c in TABLE_COLUMNS]
              + ["other", "peak in", "step", "blocks trained / with state", "may train"])
    lines = [f"{first['model_source']}; batch {first['batch_size']} x {first['max_length']} "
             f"tokens, precision {first['precision']} (weights {first['weights_dtype']}), "
             f"{first['tensors']} tensors, horizon {max(r['steps'] for r in rows)} steps "
             f"(layer-wise strategies; others 2)", "",
             "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in rows:
        c = r["categories"]
        other = c["buffers"] + c["other"]
        selected = r["selected_blocks"]
        trained = f"{len(selected)}" if selected is not None else "all"
        cells = ([r["strategy"], f"{r['peak_bytes'] / unit:.2f}"]
                 + [f"{c[k] / unit:.2f}" for k in TABLE_COLUMNS]
                 + [f"{other / unit:.2f}", r["peak_phase"], str(r["measured_step"]),
                    f"{trained} / {r['blocks_with_optimizer_state']} of {r['num_blocks']}",
                    f"{r['trainable_params'] / r['total_params']:.2%}"])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Tensor memory only (torch's MemTracker under FakeTensorMode): no CUDA "
              "context, allocator rounding or cache, kernel workspaces. 'peak in': the phase "
              "of the step at the peak; the categories are their sizes at that moment. 'step': "
              "the measured step of the horizon (its largest); 'blocks trained / with state': "
              "blocks that train in it / blocks holding optimizer state; 'may train': the share "
              "of parameters the optimizer holds (that train at some step)."]
    return "\n".join(lines)
