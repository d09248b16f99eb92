"""The step's kernel choices (benchmark/trial/kernels.py): fast dropout masks draw the same
distribution, eager attention computes what sdpa computes, never-trained weights move to
the compute dtype and nothing else does, and a suite that pins none of them keeps its keys."""

import pytest
import torch

from benchmark.trial.build import build_trial
from benchmark.trial.config import TrainConfig
from benchmark.trial.kernels import LEGACY_KERNELS, fast_dropout, keep_mask


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_keep_mask_is_a_bernoulli_draw_with_the_rounded_probability(p):
    torch.manual_seed(0)
    keep, scale = keep_mask((2000, 1000), p)
    rounded = round(p * 65536) / 65536
    assert abs(rounded - p) <= 0.5 / 65536
    assert scale == pytest.approx(1 / (1 - rounded))
    dropped = 1 - keep.double().mean().item()
    sigma = (p * (1 - p) / keep.numel()) ** 0.5
    assert abs(dropped - p) < 5 * sigma
    # every 16-bit lane of the 64-bit words is uniform: no lane drops more than another
    lanes = 1 - keep.view(-1)[: keep.numel() // 4 * 4].view(-1, 4).double().mean(dim=0)
    assert (lanes - p).abs().max().item() < 5 * sigma * 2


def test_fast_dropout_repeats_with_the_seed_keeps_its_gradient_and_is_unbiased():
    x = torch.randn(64, 300, requires_grad=True)
    torch.manual_seed(1)
    first = fast_dropout(x, 0.1)
    torch.manual_seed(1)
    again = fast_dropout(x, 0.1)
    assert torch.equal(first, again)
    assert not torch.equal(first, fast_dropout(x, 0.1))  # the stream moves on
    first.sum().backward()
    kept = first != 0
    scale = 1 / (1 - round(0.1 * 65536) / 65536)
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], scale))
    assert torch.all(x.grad[~kept] == 0)
    ones = torch.ones(1000, 1000)
    assert fast_dropout(ones, 0.1).mean().item() == pytest.approx(1.0, abs=2e-3)
    assert fast_dropout(x, 0.1, training=False) is x


def test_fast_dropout_of_a_bf16_tensor_scales_by_the_exact_inverse_keep_probability():
    # A bf16 mask holding 1/(1-p) would round 1/0.95 to 1.0547 (+0.2%) on every kept value.
    x = torch.randn(1000, 1000).bfloat16().requires_grad_()
    torch.manual_seed(2)
    out = fast_dropout(x, 0.05)
    upstream = torch.randn(1000, 1000).bfloat16()
    out.backward(upstream)
    kept = (out != 0) & (x != 0) & (upstream != 0)
    exact = 1 / (1 - round(0.05 * 65536) / 65536)
    for scaled, given in ((out, x), (x.grad, upstream)):
        ratio = (scaled.float()[kept] / given.float()[kept]).mean().item()
        assert ratio == pytest.approx(exact, abs=2e-4)


@pytest.mark.parametrize("model", ["minilm", "tiny-llama"])
def test_eager_attention_computes_what_sdpa_computes_and_fast_masks_replace_every_dropout(model):
    ids = torch.randint(100, 2000, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0  # padding
    logits = {}
    for attention in ("sdpa", "eager"):
        trial = build_trial(TrainConfig(model=model, strategy="lora", precision="fp32",
                                        attention=attention, dropout_masks="fast"),
                            num_labels=4, with_data=False)
        assert trial.kernels["attention"] == attention
        assert not [m for m in trial.model.modules() if type(m) is torch.nn.Dropout]
        assert trial.kernels["fast_dropout_layers"] > 0
        trial.model.eval()
        with torch.no_grad():
            logits[attention] = trial.model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(logits["sdpa"], logits["eager"], atol=1e-5)


def test_frozen_weights_move_to_the_compute_dtype_only_where_no_optimizer_holds_them():
    trial = build_trial(TrainConfig(model="tiny-llama", strategy="lora", precision="bf16",
                                    frozen_weights="compute", lr=1e-2),
                        num_labels=4, with_data=False)
    model = trial.model
    base = [m.base_layer.weight for m in model.modules() if hasattr(m, "base_layer")]
    assert base and all(w.dtype == torch.bfloat16 for w in base)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)  # fp32 masters
    assert trial.kernels["frozen_values_converted"] == sum(w.numel() for w in base)
    before = [p.detach().clone() for p in trained]
    batch = {"input_ids": torch.randint(100, 2000, (4, 9)),
             "attention_mask": torch.ones(4, 9, dtype=torch.long), "labels": torch.tensor([0, 1, 2, 3])}
    for step in range(2):
        trial.train_step([batch], step)
    assert all(not torch.equal(b, p) for b, p in zip(before, trained) if p.grad is not None)
    # a layer-wise strategy that trains whole blocks keeps their fp32 weights
    lisa = build_trial(TrainConfig(model="tiny-llama", strategy="lisa", precision="bf16",
                                   frozen_weights="compute"), num_labels=4, with_data=False)
    blocks = lisa.strategy.parts.blocks
    assert all(p.dtype == torch.float32 for block in blocks for p in block.parameters())
    fp32 = build_trial(TrainConfig(model="tiny-llama", strategy="lora", precision="fp32",
                                   frozen_weights="compute"), num_labels=4, with_data=False)
    assert fp32.kernels["frozen_values_converted"] == 0  # no autocast, nothing to cast to


def _lora_input_dtypes(trial) -> set:
    seen = set()
    for module in trial.model.modules():
        if hasattr(module, "lora_A"):
            module.lora_A["default"].register_forward_pre_hook(
                lambda _module, args: seen.add(args[0].dtype))
    batch = {"input_ids": torch.randint(100, 2000, (4, 9)),
             "attention_mask": torch.ones(4, 9, dtype=torch.long), "labels": torch.tensor([0, 1, 2, 3])}
    trial.train_step([batch], 0)
    return seen


def test_lora_input_cast_none_keeps_the_bf16_input_and_only_with_fast_masks():
    def trial(masks, cast):
        return build_trial(TrainConfig(model="tiny-llama", strategy="lora", precision="bf16",
                                       dropout_masks=masks, lora_input_cast=cast),
                           num_labels=4, with_data=False)

    uncast = trial("fast", "none")
    assert uncast.kernels["lora_input_cast"] == "none" and uncast.kernels["lora_layers_uncast"] > 0
    # q, k, v and up take the fp32 norm output; down takes the bf16 SiLU gate, which peft
    # would otherwise copy to fp32 for its dropout
    assert _lora_input_dtypes(uncast) == {torch.float32, torch.bfloat16}
    peft_cast = trial("fast", "adapter")
    assert peft_cast.kernels["lora_layers_uncast"] == 0
    assert _lora_input_dtypes(peft_cast) == {torch.float32}
    # torch's CPU dropout would scale a bf16 input by a bf16-rounded 1/(1-p): refused there
    torch_masks = trial("torch", "none")
    assert torch_masks.kernels["lora_input_cast"] == "adapter"
    assert _lora_input_dtypes(torch_masks) == {torch.float32}


def test_a_suite_that_pins_no_kernel_trains_the_legacy_path_and_pinning_changes_the_key():
    from benchmark.sweep.suite import expand_trials, load_suite, train_config, trial_key

    suite = load_suite("revisions-deep")
    trial = expand_trials(suite)[0]
    config = train_config(trial)
    assert {k: getattr(config, k) for k in LEGACY_KERNELS} == LEGACY_KERNELS
    pinned = {**trial, "budget": {**trial["budget"], "dropout_masks": "fast"}}
    assert train_config(pinned).dropout_masks == "fast"
    assert trial_key(pinned) != trial_key(trial)
    assert TrainConfig().dropout_masks == "fast"  # `train` itself takes the fast path
