"""Find a Hugging Face model's transformer blocks without a table of class names.

The blocks are the `nn.ModuleList` whose children all share one class and which holds
the most parameters (BERT's `encoder.layer`, Llama's `model.layers`, GPT-2's
`transformer.h`, ... also inside a peft wrapper). Parameters registered before the first
block are the "embeddings"; those after the last block (final norm, pooler,
classification head) are the "head".
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class ModelParts:
    blocks: nn.ModuleList
    blocks_name: str  # qualified name of the ModuleList inside the model
    embeddings: list[nn.Parameter]
    head: list[nn.Parameter]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    candidates = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 1:
            continue
        classes = {type(child) for child in module}
        if len(classes) == 1 and _param_count(module) > 0:
            candidates.append((_param_count(module), name, module))
    if not candidates:
        raise ValueError(f"no transformer blocks found in {type(model).__name__}: "
                         "it has no nn.ModuleList of identical modules")
    _, name, blocks = max(candidates, key=lambda c: c[0])
    return name, blocks


def split_model(model: nn.Module) -> ModelParts:
    """Blocks, and the parameters before them (embeddings) and after them (head)."""
    blocks_name, blocks = find_blocks(model)
    in_blocks = {id(p) for p in blocks.parameters()}
    embeddings: list[nn.Parameter] = []
    head: list[nn.Parameter] = []
    seen_blocks = False
    for p in model.parameters():  # registration order: embeddings, blocks, head
        if id(p) in in_blocks:
            seen_blocks = True
        elif seen_blocks:
            head.append(p)
        else:
            embeddings.append(p)
    return ModelParts(blocks=blocks, blocks_name=blocks_name, embeddings=embeddings, head=head)


def linear_module_suffixes(block: nn.Module) -> list[str]:
    """Names (relative to the block) of its linear layers: the default LoRA targets."""
    return [name for name, module in block.named_modules() if _is_linear(name, module)]


def _is_linear(name: str, module: nn.Module) -> bool:
    # GPT-2 uses transformers' Conv1D, which peft also adapts; skip LoRA's own A/B layers.
    return ((isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D")
            and "lora_" not in name)


def attention_output_projection(block: nn.Module) -> nn.Module:
    """The last linear layer inside the block's attention submodule (o_proj, c_proj, ...)."""
    attention = None
    for name, module in block.named_modules():
        leaf = name.rsplit(".", 1)[-1].lower()
        if name and ("attn" in leaf or "attention" in leaf):
            attention = module
            break
    if attention is None:
        raise ValueError(f"no attention submodule found in {type(block).__name__}")
    last = None
    for name, module in attention.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight"):
            last = module  # a peft LoRA wrapper: its effective weight is base + delta
        elif _is_linear(name, module) and "base_layer" not in name:
            last = module
    if last is None:
        raise ValueError(f"no linear layer in the attention of {type(block).__name__}")
    return last
