"""Benchmark suite for layer-selection and PEFT strategies on revision intention prediction.

Kept import-light on purpose: `python -m benchmark list` must not load torch.
"""
