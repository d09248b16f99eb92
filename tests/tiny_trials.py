"""Helpers shared by the strategy tests: a trial on the tiny random Llama built through the
trial's own set-up, and a batch for it."""

import torch

from benchmark.trial.build import build_trial
from benchmark.trial.config import TrainConfig


def tiny_trial(strategy, options, model="tiny-llama", seed=0, lr=1e-2):
    """AdamW at `lr` with weight decay 0.1: any weight the optimizer touches moves."""
    return build_trial(TrainConfig(model=model, strategy=strategy, strategy_options=options,
                                   seed=seed, lr=lr, weight_decay=0.1, warmup_steps=0,
                                   max_steps=100, device="cpu", precision="fp32"),
                       num_labels=3, with_data=False)


def tiny_batch(tokenizer, n=4):
    enc = tokenizer(["The cat sat on the mat."] * n, ["A cat sat on a mat today."] * n,
                    padding=True, return_tensors="pt")
    enc["labels"] = torch.arange(n) % 3
    return dict(enc)
