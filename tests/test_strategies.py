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
from strategies.ir_tuning import select_layers

LAYERWISE = [
    ("ir-tuning", {"adapter": "lora"}),
    ("ir-tuning", {"adapter": "none"}),
    ("ir-tuning", {"adapter": "none", "metric": "cosine"}),
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


def _setup(model_name, strategy_name, options, seed=0, **train_options):
    """The trial's own set-up, without data: AdamW at lr 1e-2 (the schedule is never
    stepped here) and weight decay 0.1, so any block the optimizer touches moves."""
    trial = build_trial(TrainConfig(model=model_name, strategy=strategy_name,
                                    strategy_options=options, seed=seed, lr=1e-2,
                                    weight_decay=0.1, warmup_steps=0, max_steps=100,
                                    device="cpu", precision="fp32", **train_options),
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


def _selecting_steps(model, strategy, optimizer, batch, count):
    """(step, every block's weights before it, the blocks it selected) for `count` steps."""
    for step in range(count):
        before = [{n: p.detach().clone() for n, p in b.named_parameters()}
                  for b in strategy.parts.blocks]
        optimizer_step(model, strategy, optimizer, [batch], step)
        yield step, before, set(strategy.selection_trace[-1])


@pytest.mark.parametrize("model_name", ["tiny-llama", "minilm"])
@pytest.mark.parametrize("strategy_name,options", LAYERWISE)
def test_frozen_blocks_stay_bit_for_bit_unchanged(model_name, strategy_name, options):
    model, tokenizer, strategy, optimizer = _setup(model_name, strategy_name, options)
    batch = _batch(tokenizer)
    for step, before, selected in _selecting_steps(model, strategy, optimizer, batch, 4):
        if options.get("metric") == "cosine" and step == 0:
            assert not selected  # every similarity is still 1.0: no block, as the reference
        else:
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
    from strategies import STRATEGIES

    # The repository's own (tests/test_compare.py registers outside ones in this process).
    shipped = {name for name, cls in STRATEGIES.items() if cls.__module__.startswith("strategies.")}
    assert shipped == {"full-ft", "lora", "ir-tuning", "lisa", "random-layers", "random-matched", "spectrum",
                       "head-only", "ist", "badam", "galore", "top-layers"}
    assert shipped <= set(list_strategies())


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


def _head_snapshot(strategy):
    return [p.detach().clone() for p in strategy.parts.head]


def test_ir_tuning_train_head_false_keeps_the_random_head_bit_for_bit():
    # head_lr given: the loop looks for a "head" group, which a frozen head does not have.
    model, tokenizer, strategy, optimizer = _setup(
        "tiny-llama", "ir-tuning", {"adapter": "lora", "train_head": False}, head_lr=1e-2)
    head_before = _head_snapshot(strategy)
    assert head_before and not any(p.requires_grad for p in strategy.parts.head)
    assert "head" not in {g.get("name") for g in optimizer.param_groups}
    batch = _batch(tokenizer)
    for _, before, selected in _selecting_steps(model, strategy, optimizer, batch, 3):
        assert selected and _blocks_changed(strategy, before) == selected
        # What moved in the selected blocks is LoRA only.
        for i in selected:
            for name, p in strategy.parts.blocks[i].named_parameters():
                assert torch.equal(before[i][name], p.detach()) or "lora_" in name
    assert all(torch.equal(a, p.detach()) for a, p in zip(head_before, strategy.parts.head))
    assert not any(p in optimizer.state for p in strategy.parts.head)


def test_ir_tuning_trains_the_head_by_default():
    model, tokenizer, strategy, optimizer = _setup("tiny-llama", "ir-tuning", {"adapter": "lora"})
    head_before = _head_snapshot(strategy)
    assert "head" in {g.get("name") for g in optimizer.param_groups}
    optimizer_step(model, strategy, optimizer, [_batch(tokenizer)], 0)
    assert all(not torch.equal(a, p.detach()) for a, p in zip(head_before, strategy.parts.head))


@pytest.mark.parametrize("model_name,targets,projection_name", [
    # o_proj carries LoRA here, so base + delta and base differ once B is non-zero.
    ("tiny-llama", ["o_proj", "q_proj"], "self_attn.o_proj"),
    ("minilm", ["attention.self.query", "attention.self.key", "attention.self.value",
                "intermediate.dense", "output.dense"], "attention.output.dense"),
])
def test_ir_tuning_weight_metric_scores_the_base_output_projection(model_name, targets,
                                                                   projection_name):
    model, _, strategy, _ = _setup(model_name, "ir-tuning", {
        "adapter": "lora", "metric": "weight", "target_modules": targets, "lora_r": 2})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)  # a LoRA delta the score must leave out
    expected = []
    for block in strategy.parts.blocks:
        projection = block.get_submodule(projection_name)
        weight = getattr(projection, "base_layer", projection).weight
        expected.append(float(weight.detach().double().norm()))
        if hasattr(projection, "get_delta_weight"):
            merged = weight + projection.get_delta_weight("default")
            assert float(merged.double().norm()) != pytest.approx(expected[-1], rel=1e-3)
    chosen = strategy.before_step(0)
    assert list(strategy.scores) == pytest.approx(expected, rel=1e-5)  # fp32 against fp64
    assert chosen == select_layers(strategy.scores, metric="weight")


def _reference_similarity(hidden_in, hidden_out):
    """CosineSimilarityTracker.compute_and_reset, as the reference writes it."""
    before, after = hidden_in.double().mean(dim=0), hidden_out.double().mean(dim=0)
    before_norm = before / before.norm(dim=1, keepdim=True)
    after_norm = after / after.norm(dim=1, keepdim=True)
    cos_sim = torch.mm(before_norm, after_norm.t())
    return float(torch.trace(cos_sim) / cos_sim.size(0))


def _record_first_forward(strategy):
    """Each block's input and output hidden states of the first forward after a reset."""
    recorded = {}

    def hook_for(i):
        def hook(module, args, kwargs, output):
            if i not in recorded:
                hidden_in = args[0] if args else kwargs["hidden_states"]
                hidden_out = output[0] if isinstance(output, tuple) else output
                recorded[i] = (hidden_in.detach().clone(), hidden_out.detach().clone())
        return hook

    for i, block in enumerate(strategy.parts.blocks):
        block.register_forward_hook(hook_for(i), with_kwargs=True)
    return recorded


def test_ir_tuning_cosine_scores_the_first_training_micro_batch_only():
    model, tokenizer, strategy, optimizer = _setup("tiny-llama", "ir-tuning",
                                                   {"adapter": "lora", "metric": "cosine"})
    first = _batch(tokenizer)
    second = tokenizer(["An entirely different pair."] * 4, ["Yes, quite different."] * 4,
                       padding=True, return_tensors="pt")
    second = {**second, "labels": torch.arange(4) % 3}
    recorded = _record_first_forward(strategy)
    optimizer_step(model, strategy, optimizer, [first, second], 0)
    assert strategy.selection_trace[0] == []  # all similarities 1.0: nothing to split
    expected = [_reference_similarity(*recorded[i]) for i in range(strategy.num_blocks)]
    assert list(strategy.scores) == pytest.approx(expected, rel=1e-5)
    assert len(set(expected)) == strategy.num_blocks

    with torch.no_grad():  # an evaluation forward between steps is not scored
        model.eval()
        model(**second)
        model.train()
    assert list(strategy.scores) == pytest.approx(expected, rel=1e-5)
    chosen = strategy.before_step(1)
    assert chosen == select_layers(expected, metric="cosine") and chosen

    recorded.clear()
    model(**second).loss.backward()
    strategy.after_backward(1)
    rescored = [_reference_similarity(*recorded[i]) for i in range(strategy.num_blocks)]
    assert list(strategy.scores) == pytest.approx(rescored, rel=1e-5)


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
    with pytest.raises(UserError, match="train_head"):  # nothing at all would train at step one
        get_strategy("ir-tuning", {"metric": "cosine", "train_head": False})
    with pytest.raises(UserError, match="option train_head=maybe is not valid; it takes true or false"):
        get_strategy("ir-tuning", {"train_head": "maybe"})
    with pytest.raises(UserError, match="unknown strategy"):
        get_strategy("magic")
