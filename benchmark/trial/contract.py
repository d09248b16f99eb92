"""A strategy from outside the repository, checked against the loop's contract before any
trial trains: `prepare(model)` is implemented, returns the model to train, and leaves
`self.model` and `self.parts` set (`strategies.blocks.split_model(model)`) with something
trainable. A break is one line naming the strategy, its file and what is missing, instead of
an error deep inside the first trial (`NotImplementedError:`, `'NoneType' object has no
attribute 'head'`).

The check builds the strategy with its `tiny_options` on a random 2-block Llama classifier
(built in milliseconds once transformers is imported; nothing downloaded) and calls
`prepare` once.
"""

from __future__ import annotations

import hashlib
import traceback
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.registry import source_file

CONTRACT = ("implement prepare(model): freeze what must not train, set self.model = model and "
            "self.parts = split_model(model) (from strategies.blocks), and return the model")


def strategy_source(name: str) -> dict[str, Any]:
    """Where a registered strategy's code is: its class, file, the file's sha256, whether it
    lies outside the repository's strategies/ folder, and whether it declares itself
    layer-wise (chooses blocks step by step). Trial files record it."""
    import strategies
    from strategies import strategy_class

    cls = strategy_class(name)
    file = source_file(cls)
    home = Path(strategies.__file__).resolve().parent
    outside = file is None or home not in file.parents
    record: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}",
                              "layerwise": bool(getattr(cls, "layerwise", False)),
                              "outside_repository": outside}
    if file is not None:
        record["file"] = str(file) if outside else str(file.relative_to(home.parent))
        try:
            record["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
        except OSError:
            pass
    return record


def outside_strategies(names) -> list[str]:
    """Those of `names` whose code lies outside the repository (--include-path, plugins)."""
    return [n for n in dict.fromkeys(names) if strategy_source(n)["outside_repository"]]


def check_contract(name: str) -> None:
    """One UserError line when strategy `name` breaks the loop's contract (see above)."""
    from torch import nn

    from strategies import get_strategy, strategy_class
    from strategies.base import Strategy

    cls = strategy_class(name)
    where = f"strategy {name!r} ({source_file(cls) or cls.__module__})"
    if not isinstance(cls, type) or not issubclass(cls, Strategy):
        raise UserError(f"{where} is not a subclass of strategies.base.Strategy")
    if cls.prepare is Strategy.prepare:
        raise UserError(f"{where} does not implement prepare(model); it must {CONTRACT}")
    strategy = get_strategy(name, dict(getattr(cls, "tiny_options", {}) or {}))
    model = _tiny_llama()
    try:
        prepared = strategy.prepare(model)
    except Exception as error:
        raise UserError(f"{where}: prepare(model) failed on a tiny Llama: "
                        f"{failure_line(error)}") from None
    missing = [what for what, ok in (
        ("return the model (it returned None)", isinstance(prepared, nn.Module)),
        ("set self.model", strategy.model is not None),
        ("set self.parts = split_model(model)", strategy.parts is not None)) if not ok]
    if missing:
        raise UserError(f"{where}: prepare(model) does not {' or '.join(missing)}; it must "
                        f"{CONTRACT}")
    if not any(p.requires_grad for p in prepared.parameters()):
        raise UserError(f"{where}: after prepare(model) no parameter requires a gradient: "
                        "nothing would train")


def _tiny_llama():
    """A random 2-block Llama classifier (hidden 32), built in milliseconds once
    transformers is imported; no tokenizer, nothing downloaded."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    return LlamaForSequenceClassification(LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, num_labels=3, pad_token_id=0))


def failure_line(error: BaseException) -> str:
    """An exception as one line: its type and message, and where it was raised
    (file:line in function), e.g. for a bare `NotImplementedError` that says nothing."""
    message = " ".join(f"{type(error).__name__}: {error}".split())
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        frame = frames[-1]
        message += f" (at {frame.filename}:{frame.lineno} in {frame.name})"
    return message
