"""Inputs for the model: tokenize a task once per (task, tokenizer, format, max length),
cache it on disk, and pad dynamically per batch.

Input formats:
- `pair`: the sentence pair as two segments, (before, after), as the reference encodes it;
- `instruction`: the reference's instruction prompt holding both sentences (decoders);
- `diff`: one segment, the revised sentence with the edit marked word by word, deleted
  words in `[ ... ]` and inserted ones in `{ ... }` (difflib's alignment): the model reads
  what changed instead of having to find it. A deviation from the reference, chosen
  because MiniLM learns the task from it within a CPU budget (`results/convergence.md`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from ..core.paths import cache_root

INPUT_FORMATS = ("pair", "instruction", "diff")
_WORD = re.compile(r"\w+|[^\w\s]")
CACHE_VERSION = 2  # bump when the tokenization below changes
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels")
ID_COLUMN = "example_id"  # kept beside the model's columns: predictions are keyed by it


def instruction_prompt(instruction: str, label_names, before: str, after: str) -> str:
    return (f"{instruction} Possible intentions: {', '.join(label_names)}.\n"
            f"Original Sentence: {before or '(none: the sentence was added)'}\n"
            f"Revised Sentence: {after or '(none: the sentence was deleted)'}\n"
            "Intention:")


def edit_markup(before: str, after: str) -> str:
    """The revision as one sentence with its edit marked: "The cat [ sat ] { sits } ." """
    old, new = _WORD.findall(before), _WORD.findall(after)
    out: list[str] = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out += old[i1:i2]
            continue
        if i2 > i1:
            out += ["[", *old[i1:i2], "]"]
        if j2 > j1:
            out += ["{", *new[j1:j2], "}"]
    return " ".join(out)


def _content_hash(dataset_dict) -> str:
    digest = hashlib.sha256()
    for split in ("train", "validation", "test"):
        ds = dataset_dict[split]
        digest.update(json.dumps([split, list(ds["before"]), list(ds["after"]), list(ds["label"])]).encode())
    return digest.hexdigest()[:16]


def _tokenizer_id(tokenizer) -> str:
    return f"{tokenizer.name_or_path}|{type(tokenizer).__name__}|{len(tokenizer)}"


def tokenize_task(task, raw, tokenizer, input_format: str, max_length: int):
    """The task's splits as token ids and labels, cached under cache_root()/tokenized."""
    import datasets
    from datasets import load_from_disk

    datasets.disable_progress_bars()  # a trial's log is its evaluations, not cache writes
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input format must be one of {INPUT_FORMATS}, not {input_format!r}")
    key = hashlib.sha256(json.dumps([CACHE_VERSION, task.name, _content_hash(raw),
                                     _tokenizer_id(tokenizer), input_format, max_length])
                         .encode()).hexdigest()[:20]
    path = cache_root() / "tokenized" / f"{task.name}-{input_format}-{max_length}-{key}"
    if (path / "dataset_dict.json").exists():
        return load_from_disk(str(path))

    def encode(batch):
        if input_format == "pair":
            enc = tokenizer(batch["before"], batch["after"], truncation=True,
                            max_length=max_length)
        elif input_format == "diff":
            enc = tokenizer([edit_markup(b, a) for b, a in zip(batch["before"], batch["after"])],
                            truncation=True, max_length=max_length)
        else:
            budget = max(8, max_length // 3)  # per sentence, so the prompt's end survives
            texts = [instruction_prompt(task.task_instruction, task.label_names,
                                        _clip(tokenizer, b, budget), _clip(tokenizer, a, budget))
                     for b, a in zip(batch["before"], batch["after"])]
            enc = tokenizer(texts, truncation=True, max_length=max_length)
        enc["labels"] = batch["label"]
        enc[ID_COLUMN] = [str(i) for i in batch[task.id_column]]
        return enc

    tokenized = raw.map(encode, batched=True, remove_columns=raw["train"].column_names,
                        desc=f"tokenizing {task.name}")
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tokenized.save_to_disk(str(tmp))
    try:
        tmp.rename(path)  # atomic: concurrent trials never read a half-written cache
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(path))


def _clip(tokenizer, text: str, budget: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= budget else tokenizer.decode(ids[:budget])


def subsample(dataset, limit: int | None, seed: int = 0):
    """A deterministic random slice of `limit` rows (all rows when limit is None)."""
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


def evaluation_order(dataset) -> list[int]:
    """The row order of evaluation batches: by length, so padding stays small."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    return sorted(range(len(lengths)), key=lengths.__getitem__)


def make_loader(dataset, tokenizer, batch_size: int, shuffle: bool, seed: int = 0):
    """Batches padded to their own longest sequence, not to a fixed length.

    Training batches are grouped by length (transformers' LengthGroupedSampler: random
    mega-batches, sorted inside), evaluation runs in length order; on IteraTeR (mean 86
    tokens, max 256) this halves the padded tokens against plain random batches.
    """
    import torch
    from transformers import DataCollatorWithPadding
    from transformers.trainer_pt_utils import LengthGroupedSampler

    columns = [c for c in MODEL_COLUMNS if c in dataset.column_names]
    lengths = [len(ids) for ids in dataset["input_ids"]]
    dataset = dataset.with_format("torch", columns=columns)
    own_generator = None
    if shuffle:
        generator = torch.Generator().manual_seed(seed)
        sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
    else:
        sampler = evaluation_order(dataset)
        # Each pass over a loader draws a seed from this generator, by default the global
        # one that dropout also draws from: evaluating must not shift training's dropout.
        own_generator = torch.Generator()
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, generator=own_generator,
        collate_fn=DataCollatorWithPadding(tokenizer, padding="longest"))
