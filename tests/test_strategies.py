"""Strategies on real (tiny random and packaged pretrained) models, through the loop's own
optimizer step."""

import itertools
import math

import pytest
import torch

from benchmark.trial.build import build_trial
from benchmark.trial.config import TrainConfig
from benchmark.trial.step import optimizer_step
from strategies import STRATEGIES, get_strategy, list_strategies
from strategies.blocks import split_model

LAYERWISE = [
    ("ir-tuning", {"adapter": "lora"}),
    ("ir-tuning", {"adapter": "none"}),
    ("ir-tuning", {"adapter": "none", "metric": "cosine", "split_num": 2}),
    ("ir-tuning", {"adapter": "lora", "metric": "weight"}),
    ("lisa", {"interval": 1}),
    ("lisa", {"adapter": "lora", "interval": 2}),
    ("random-layers", {"k": 2}),
    ("random-layers", {"adapter": "none", "k": 1, "optimizer_state": "drop"}),
]


def _batch(tokenizer, n=4):
    enc = tokenizer(["The cat sat on the mat."] * n, ["A cat sat on a mat today."] * n,
                    padding=True, return_tensors="pt")
    enc["labels"] = torch.arange(n) % 3
    return dict(enc)


def _setup(model_name, strategy_name, options, seed=0):
    """The trial's own set-up, without data: AdamW at lr 1e-2 (the schedule is never
    stepped here) and weight decay 0.1, so any block the optimizer touches moves."""
    trial = build_trial(TrainConfig(model=model_name, strategy=strategy_name,
                                    strategy_options=options, seed=seed, lr=1e-2,
                                    weight_decay=0.1, warmup_steps=0, max_steps=100,
                                    device="cpu", precision="fp32"),
                        num_labels=3, with_data=False)
    trial.attach_probe_batches(itertools.repeat(_batch(trial.tokenizer)))  # for IST's probes
    return trial.model, trial.tokenizer, trial.strategy, trial.optimizer


def _blocks_changed(strategy, before):
    changed = set()
    for i, block in enumerate(strategy.parts.blocks):
        for name, p in block.named_parameters():
            if not torch.equal(before[i][name], p.detach()):
                changed.add(i)
    return changed


@pytest.mark.parametrize("model_name", ["tiny-llama", "minilm"])
@pytest.mark.parametrize("strategy_name,options", LAYERWISE)
def test_frozen_blocks_stay_bit_for_bit_unchanged(model_name, strategy_name, options):
    model, tokenizer, strategy, optimizer = _setup(model_name, strategy_name, options)
    batch = _batch(tokenizer)
    for step in range(4):
        before = [{n: p.detach().clone() for n, p in b.named_parameters()}
                  for b in strategy.parts.blocks]
        optimizer_step(model, strategy, optimizer, [batch], step)
        selected = set(strategy.selection_trace[-1])
        assert selected, "a layer-wise strategy must train some block"
        # Weight decay 0.1 and momentum would move any block the optimizer touched.
        assert _blocks_changed(strategy, before) == selected


@pytest.mark.parametrize("strategy_name", sorted(
    name for name, cls in STRATEGIES.items()
    if cls.layerwise and name not in {listed for listed, _ in LAYERWISE}))
def test_every_other_layerwise_strategy_keeps_frozen_blocks_unchanged(strategy_name):
    """Strategies added later get the invariant checked with their own tiny options."""
    test_frozen_blocks_stay_bit_for_bit_unchanged("tiny-llama", strategy_name,
                                                  STRATEGIES.get(strategy_name).tiny_options)


def test_every_strategy_is_registered():
    assert set(list_strategies()) == {"full-ft", "lora", "ir-tuning", "lisa", "random-layers",
                                      "head-only", "ist", "badam", "galore", "top-layers"}


@pytest.mark.parametrize("strategy_name", ["full-ft", "lora"])
def test_non_layerwise_strategies_train_every_block_and_the_head(strategy_name):
    model, tokenizer, strategy, optimizer = _setup("tiny-llama", strategy_name, {})
    head_before = [p.detach().clone() for p in strategy.parts.head if p.requires_grad]
    before = [{n: p.detach().clone() for n, p in b.named_parameters()} for b in strategy.parts.blocks]
    optimizer_step(model, strategy, optimizer, [_batch(tokenizer)], 0)
    assert _blocks_changed(strategy, before) == set(range(strategy.parts.num_blocks))
    assert head_before and all(not torch.equal(a, p) for a, p in
                               zip(head_before, [p for p in strategy.parts.head if p.requires_grad]))


def test_lora_freezes_base_weights():
    model, _, strategy, _ = _setup("minilm", "lora", {"r": 4, "alpha": 8})
    block = strategy.parts.blocks[0]
    trainable = {n for n, p in block.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    share = strategy.trainable_count() / sum(p.numel() for p in model.parameters())
    assert share < 0.05


def test_ir_tuning_scores_follow_the_reference_formula():
    model, tokenizer, strategy, optimizer = _setup("tiny-llama", "ir-tuning", {"adapter": "lora"})
    selected = strategy.before_step(0)
    model(**_batch(tokenizer)).loss.backward()
    expected = {i: math.sqrt(sum(math.sqrt(p.grad.norm().item())
                                 for p in strategy.block_params[i]))
                for i in selected}
    strategy.after_backward(0)
    for i in range(strategy.num_blocks):
        if i in selected:
            assert strategy.scores[i] == pytest.approx(expected[i], rel=1e-5)
        else:
            assert strategy.scores[i] == 1000.0  # never trained: keeps the initial score


def test_ir_tuning_selects_untrained_blocks_on_the_second_step():
    model, tokenizer, strategy, optimizer = _setup("minilm", "ir-tuning", {})
    batch = _batch(tokenizer)
    optimizer_step(model, strategy, optimizer, [batch], 0)
    first = set(strategy.selection_trace[0])
    optimizer_step(model, strategy, optimizer, [batch], 1)
    assert set(range(strategy.num_blocks)) - first <= set(strategy.selection_trace[1])


def test_ir_tuning_reads_gradients_to_host_once_per_step(monkeypatch):
    model, tokenizer, strategy, optimizer = _setup("tiny-llama", "ir-tuning", {})
    calls = {"item": 0, "tolist": 0}
    real_item, real_tolist = torch.Tensor.item, torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "item", lambda t: (calls.__setitem__("item", calls["item"] + 1), real_item(t))[1])
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: (calls.__setitem__("tolist", calls["tolist"] + 1), real_tolist(t))[1])
    strategy.before_step(0)
    model(**_batch(tokenizer)).loss.backward()
    strategy.after_backward(0)
    assert calls == {"item": 0, "tolist": 1}


def test_optimizer_state_drop_and_offload():
    for policy in ("drop", "offload"):
        model, tokenizer, strategy, optimizer = _setup("tiny-llama", "random-layers",
                                                       {"k": 1, "optimizer_state": policy}, seed=3)
        batch = _batch(tokenizer)
        for step in range(6):
            optimizer_step(model, strategy, optimizer, [batch], step)
            frozen = set(range(strategy.num_blocks)) - set(strategy.selection_trace[-1])
            # Only the selected block (and the head) hold optimizer state after its step.
            for i in frozen:
                assert not any(p in optimizer.state for p in strategy.block_params[i])
            if policy == "offload":
                # Frozen blocks that trained before keep their moments aside, on the CPU.
                trained_before = {i for s in strategy.selection_trace[:-1] for i in s}
                for i in frozen & trained_before:
                    for p in strategy.block_params[i]:
                        assert strategy._offloaded[p]["exp_avg"].device.type == "cpu"
        # A block trained again: "offload" brings its moments back (its step count goes on),
        # "drop" starts them fresh (step 1).
        last = strategy.selection_trace[-1][0]
        times_trained = sum(last in s for s in strategy.selection_trace)
        assert times_trained > 1 or policy == "drop"
        step_count = float(optimizer.state[strategy.block_params[last][0]]["step"])
        assert step_count == (times_trained if policy == "offload" else 1.0)


def test_keep_policy_holds_state_of_every_block_ever_trained():
    model, tokenizer, strategy, optimizer = _setup("tiny-llama", "random-layers", {"k": 1}, seed=3)
    for step in range(6):
        optimizer_step(model, strategy, optimizer, [_batch(tokenizer)], step)
    trained = {i for s in strategy.selection_trace for i in s}
    with_state = {i for i in range(strategy.num_blocks)
                  if all(p in optimizer.state for p in strategy.block_params[i])}
    assert with_state == trained


def test_lisa_resamples_every_interval_and_trains_embeddings():
    model, tokenizer, strategy, optimizer = _setup("tiny-llama", "lisa", {"interval": 3, "gamma": 1})
    emb_before = [p.detach().clone() for p in strategy.parts.embeddings]
    for step in range(6):
        optimizer_step(model, strategy, optimizer, [_batch(tokenizer)], step)
    trace = strategy.selection_trace
    assert trace[0] == trace[1] == trace[2] and trace[3] == trace[4] == trace[5]
    assert all(len(s) == 1 for s in trace)
    assert any(not torch.equal(a, p) for a, p in zip(emb_before, strategy.parts.embeddings))


@pytest.mark.parametrize("config_name", ["GPT2Config", "Qwen2Config", "MistralConfig", "BertConfig"])
def test_blocks_are_found_without_a_class_table(config_name):
    import transformers

    cls = getattr(transformers, config_name)
    kwargs = dict(vocab_size=100, num_labels=2, pad_token_id=0)
    if config_name == "GPT2Config":
        kwargs.update(n_embd=32, n_layer=3, n_head=2)
    else:
        kwargs.update(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                      intermediate_size=64)
        if config_name != "BertConfig":
            kwargs["num_key_value_heads"] = 1
    model = transformers.AutoModelForSequenceClassification.from_config(cls(**kwargs))
    parts = split_model(model)
    assert parts.num_blocks == 3
    head_names = {n for n, p in model.named_parameters() if any(p is h for h in parts.head)}
    assert any(n.startswith(("score", "classifier")) for n in head_names)
    # The same blocks are found through a peft wrapper, with LoRA weights inside them.
    strategy = get_strategy("ir-tuning", {"lora_r": 2}, seed=0)
    strategy.prepare(model)
    assert strategy.num_blocks == 3 and all(strategy.block_params)


def test_bad_options_are_one_line_user_errors():
    from benchmark.core.errors import UserError

    with pytest.raises(UserError, match="no option 'gama'"):
        get_strategy("lisa", {"gama": 3})
    with pytest.raises(UserError, match="adapter"):
        get_strategy("ir-tuning", {"adapter": "bottleneck"})
    with pytest.raises(UserError, match="unknown strategy"):
        get_strategy("magic")
