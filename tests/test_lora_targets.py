"""Which linear layers of a block a `target_modules` list puts LoRA on, pinned for the
MiniLM BERT block and the tiny Llama block, and unchanged for every committed suite."""

from pathlib import Path

import pytest
import yaml

from benchmark.core.errors import UserError
from benchmark.trial.models import load_model
from strategies import get_strategy
from strategies.adapters import resolve_block_targets
from strategies.blocks import linear_module_suffixes, split_model

SUITES = Path(__file__).resolve().parents[1] / "benchmark" / "suites"

LLAMA_PAPER_SET = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
BERT_PAPER_SET = ["attention.self.query", "attention.self.key", "attention.self.value",
                  "intermediate.dense", "output.dense"]


@pytest.fixture(scope="module")
def bert_block():
    model, _ = load_model("minilm", num_labels=3)
    return split_model(model).blocks[0]


@pytest.fixture(scope="module")
def llama_block():
    model, _ = load_model("tiny-llama", num_labels=3)
    return split_model(model).blocks[0]


def _suffix_rule(block, targets):
    """The rule before whole names were exact: a target matched any dot-separated suffix."""
    return [s for s in linear_module_suffixes(block)
            if any(s == t or s.endswith("." + t) for t in targets)]


def test_bert_block_has_the_names_the_pins_assume(bert_block):
    assert linear_module_suffixes(bert_block) == [
        "attention.self.query", "attention.self.key", "attention.self.value",
        "attention.output.dense", "intermediate.dense", "output.dense"]


@pytest.mark.parametrize("targets,expected", [
    # The paper's q, k, v, up, down: no attention output projection.
    (BERT_PAPER_SET, ["attention.self.query", "attention.self.key", "attention.self.value",
                      "intermediate.dense", "output.dense"]),
    (["output.dense"], ["output.dense"]),  # the feed-forward down projection only
    (["attention.output.dense"], ["attention.output.dense"]),
    (["query", "value"], ["attention.self.query", "attention.self.value"]),  # suffixes
    (["dense"], ["attention.output.dense", "intermediate.dense", "output.dense"]),
    (None, ["attention.self.query", "attention.self.key", "attention.self.value",
            "attention.output.dense", "intermediate.dense", "output.dense"]),
])
def test_bert_block_targets(bert_block, targets, expected):
    assert resolve_block_targets(bert_block, targets) == expected


def test_bert_paper_set_caught_the_attention_output_under_the_suffix_rule(bert_block):
    # Why whole names are exact now: `output.dense` used to add the o-projection.
    assert "attention.output.dense" in _suffix_rule(bert_block, BERT_PAPER_SET)
    assert "attention.output.dense" not in resolve_block_targets(bert_block, BERT_PAPER_SET)


@pytest.mark.parametrize("targets,expected", [
    (LLAMA_PAPER_SET, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                       "mlp.up_proj", "mlp.down_proj"]),
    (["self_attn.q_proj", "down_proj"], ["self_attn.q_proj", "mlp.down_proj"]),
    (["o_proj"], ["self_attn.o_proj"]),
    (None, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]),
])
def test_llama_block_targets(llama_block, targets, expected):
    assert resolve_block_targets(llama_block, targets) == expected


def test_a_target_matching_nothing_is_an_error(bert_block):
    with pytest.raises(UserError, match="q_proj matches no linear layer"):
        resolve_block_targets(bert_block, ["q_proj"])
    with pytest.raises(UserError, match="nope matches no linear layer"):  # one typo is enough
        resolve_block_targets(bert_block, ["query", "nope"])


def _suite_target_lists():
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "target_modules" and value:
                    found.append(list(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in sorted(SUITES.glob("*.yaml")):
        walk(yaml.safe_load(path.read_text()))
    return found


def test_committed_suites_resolve_as_before(bert_block, llama_block):
    target_lists = _suite_target_lists()
    assert target_lists, "the suites name target_modules (revisions-llm, revisions-smollm)"
    for targets in target_lists:
        for block in (bert_block, llama_block):
            before = _suffix_rule(block, targets)
            if before:
                assert resolve_block_targets(block, targets) == before, targets
            else:
                with pytest.raises(UserError):
                    resolve_block_targets(block, targets)


def test_peft_wraps_exactly_the_resolved_layers_on_bert():
    model, _ = load_model("minilm", num_labels=3)
    strategy = get_strategy("lora", {"lora_r": 2, "target_modules": BERT_PAPER_SET})
    strategy.prepare(model)
    parts = split_model(strategy.model)
    for block in parts.blocks:
        wrapped = sorted(name for name, module in block.named_modules()
                         if hasattr(module, "lora_A"))
        assert wrapped == sorted(BERT_PAPER_SET)
