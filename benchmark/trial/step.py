"""One optimizer step: the strategy's hooks around forward, backward and the update."""

from __future__ import annotations


def batch_loss(model, batch: dict, class_weights=None):
    """The model's loss on a batch: its own cross-entropy, or each example's cross-entropy
    times its class weight, averaged over examples (not over weights, so that the mean of
    micro-batches and workers is the whole batch's loss, as with plain cross-entropy)."""
    if class_weights is None:
        return model(**batch).loss
    import torch.nn.functional as F

    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    return (F.cross_entropy(logits.float(), labels, reduction="none") * class_weights[labels]).mean()


def optimizer_step(model, strategy, optimizer, micro_batches, step: int, *, device: str = "cpu",
                   autocast_dtype=None, scaler=None, max_grad_norm: float | None = 1.0,
                   trainable=None, backend=None, class_weights=None):
    """One optimizer step over the micro-batches (gradient accumulation); each micro-batch
    is a global batch of which this worker takes its share. Returns this worker's mean
    loss of the step as a detached device tensor (no host sync here)."""
    import torch

    from .backends import LocalBackend

    backend = backend or LocalBackend()
    trainable = trainable if trainable is not None else strategy.trainable_params()
    strategy.before_step(step)
    step_loss = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        batch = {k: v.to(device) for k, v in backend.shard(batch).items()}
        with torch.autocast(device.split(":")[0], dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            loss = batch_loss(model, batch, class_weights) / len(micro_batches)
        backend.backward(loss, scaler)
        backend.end_micro_batch(last=i == len(micro_batches) - 1)
        step_loss += loss.detach().float()
    backend.reduce_gradients(trainable)
    if scaler:
        scaler.unscale_(optimizer)  # the scores read unscaled gradients
    strategy.after_backward(step)  # gradients before clipping, as the reference
    backend.apply(optimizer, trainable, max_grad_norm, scaler)
    return step_loss
