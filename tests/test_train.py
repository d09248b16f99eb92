"""The training loop end to end on tiny slices of the real corpora (CPU)."""

import json
import math

import pytest

from benchmark.cli import main
from benchmark.trial.metrics import classification_metrics, steps_to_converge
from benchmark.core.errors import TrialFailed, UserError
from benchmark.trial.config import TrainConfig
from benchmark.trial.loop import run_trial
from strategies import STRATEGIES as REGISTRY

STRATEGIES = REGISTRY.names()
TINY = dict(max_steps=4, eval_every=2, batch_size=8, train_limit=32, eval_limit=24, test_limit=24,
            max_length=64)


# Every registered strategy on the tiny Llama; the original five also on MiniLM (a real
# pretrained BERT), which costs more per run.
CASES = [("tiny-llama", s) for s in STRATEGIES] + [
    ("minilm", s) for s in ("full-ft", "lora", "ir-tuning", "lisa", "random-layers")]


@pytest.mark.parametrize("model,strategy", CASES)
def test_every_strategy_trains_end_to_end(model, strategy, data_dir):
    result = run_trial(TrainConfig(task="iterater", strategy=strategy, model=model,
                                   data_dir=str(data_dir), **TINY))
    assert 0.0 <= result["test"]["macro_f1"] <= 1.0
    assert set(result["test"]["per_class_f1"]) == set(result["label_names"])
    assert result["best_step"] in (2, 4)
    assert [h["step"] for h in result["history"]] == [2, 4]
    assert result["steps_to_converge"] <= result["best_step"]
    assert result["peak_memory_mb"] > 100 and result["memory_source"] == "rss"
    assert result["train_samples_per_s"] > 0
    assert 0 < result["trainable_share"] <= 1
    assert result["kernels"]["dropout_masks"] == "fast"  # the `train` defaults, recorded
    layerwise = REGISTRY.get(strategy).layerwise
    trace = result["selection_trace"]
    if layerwise:
        assert len(trace) == 4 and all(len(row) == result["num_blocks"] for row in trace)
        assert all("1" in row for row in trace)
    else:
        assert trace == []
    if strategy == "full-ft":
        assert result["trainable_share"] == 1.0
    json.dumps(result)  # JSON-ready


def test_instruction_format_on_a_decoder(data_dir):
    result = run_trial(TrainConfig(task="argrewrite", strategy="ir-tuning", model="tiny-llama",
                                   input_format="instruction", data_dir=str(data_dir), **TINY))
    assert result["config"]["input_format"] == "instruction"
    assert len(result["label_names"]) == len(result["test"]["per_class_f1"])


def test_balanced_ce_weighs_classes_as_scikit_learn_and_trains(data_dir):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.utils.class_weight import compute_class_weight

    from benchmark.trial.build import build_trial
    from benchmark.trial.data import make_loader
    from benchmark.trial.step import batch_loss

    trial = build_trial(TrainConfig(task="iterater", strategy="full-ft", model="tiny-llama",
                                    loss="balanced-ce", data_dir=str(data_dir), **TINY))
    labels = list(trial.splits["train"]["labels"])
    expected = compute_class_weight("balanced", classes=np.unique(labels), y=np.array(labels))
    assert trial.class_weights.tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert trial.class_weights.max() > 2 * trial.class_weights.min()  # the corpus is skewed
    batch = next(iter(make_loader(trial.splits["train"], trial.tokenizer, 8, shuffle=False)))
    batch = {k: v.to(trial.device) for k, v in batch.items()}
    trial.model.eval()
    with torch.no_grad():
        logits = trial.model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        by_hand = sum(expected[y] * F.cross_entropy(logits[i:i + 1], batch["labels"][i:i + 1])
                      for i, y in enumerate(batch["labels"].tolist())) / len(batch["labels"])
        weighted = batch_loss(trial.model, batch, trial.class_weights)
        assert weighted.item() == pytest.approx(float(by_hand), rel=1e-4)
        assert weighted.item() != pytest.approx(batch_loss(trial.model, batch).item(), rel=1e-3)
    result = run_trial(TrainConfig(task="iterater", strategy="full-ft", model="tiny-llama",
                                   loss="balanced-ce", data_dir=str(data_dir), **TINY))
    assert result["config"]["loss"] == "balanced-ce" and math.isfinite(result["history"][-1]["train_loss"])


def test_eval_from_skips_early_evaluations_without_changing_training(data_dir):
    base = dict(TINY, max_steps=6, eval_every=1)
    every = run_trial(TrainConfig(task="iterater", strategy="lora", model="tiny-llama",
                                  data_dir=str(data_dir), **base))
    late = run_trial(TrainConfig(task="iterater", strategy="lora", model="tiny-llama",
                                 data_dir=str(data_dir), eval_from=4, **base))
    assert [h["step"] for h in every["history"]] == [1, 2, 3, 4, 5, 6]
    assert [h["step"] for h in late["history"]] == [4, 5, 6]
    # Evaluating (dropout off, snapshots) leaves the training trajectory as it was.
    by_step = {h["step"]: h for h in every["history"]}
    for h in late["history"][1:]:  # step 4's loss is the mean over steps 1-4 in the late run
        assert h["train_loss"] == by_step[h["step"]]["train_loss"]
        assert h["dev_macro_f1"] == by_step[h["step"]]["dev_macro_f1"]
    for result in (every, late):  # disjoint parts of the trial's wall time
        assert result["eval_time_s"] > 0 and result["setup_time_s"] > 0
        parts = result["setup_time_s"] + result["train_time_s"] + result["eval_time_s"]
        assert parts <= result["wall_time_s"] + 0.05
    with pytest.raises(UserError, match="eval_from"):
        TrainConfig(eval_from=-1)
    with pytest.raises(UserError, match="past max_steps"):
        TrainConfig(max_steps=6, eval_from=7)


def test_nan_loss_fails_the_trial_before_dev_is_first_evaluated(data_dir):
    # Dev is first evaluated at step 6; the loss is checked every 2 steps all the same.
    with pytest.raises(TrialFailed, match=r"diverged: loss is (nan|inf) at step [24]$"):
        run_trial(TrainConfig(task="iterater", strategy="full-ft", model="tiny-llama", lr=1e30,
                              max_grad_norm=0, data_dir=str(data_dir),
                              **dict(TINY, max_steps=6, eval_from=6)))


def test_train_command_writes_result_json(tmp_path, data_dir, capsys):
    out = tmp_path / "r.json"
    code = main(["train", "--task", "argrewrite-coarse", "--strategy", "lisa", "--model", "tiny-llama",
                 "--data-dir", str(data_dir), "--max-steps", "2", "--eval-every", "1",
                 "--train-limit", "16", "--eval-limit", "16", "--test-limit", "16", "--option", "gamma=1", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["strategy_options"]["gamma"] == 1
    assert "test macro F1" in capsys.readouterr().out


def test_metrics_by_hand():
    import numpy as np

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = classification_metrics([0, 1, 1, 1], probs, ["a", "b"])
    # predictions 0,1,0,1: class a P=1/2 R=1 F1=2/3; class b P=1 R=2/3 F1=0.8
    assert m["accuracy"] == 0.75
    assert m["per_class_f1"] == pytest.approx({"a": 2 / 3, "b": 0.8})
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_steps_to_converge():
    history = [(10, 0.20), (20, 0.40), (30, 0.495), (40, 0.50), (50, 0.45)]
    assert steps_to_converge(history) == 30  # 0.495 >= 0.98 * 0.50
    assert steps_to_converge(history, tolerance=0.0) == 40
    assert steps_to_converge([]) is None


def test_learning_curve_points_are_the_same_from_dev_predictions_or_their_own_evaluation(data_dir):
    # Dev holds the curve's rows (eval_limit >= curve_limit, the same seeded shuffle): the
    # last point comes out of dev's predictions; with a smaller dev, the subset is
    # evaluated on its own. Training is identical, so every point must match.
    base = dict(TINY, max_steps=4, eval_every=4, curve_every=2, curve_limit=16)
    shared = run_trial(TrainConfig(task="iterater", strategy="lora", model="tiny-llama",
                                   data_dir=str(data_dir), **base))
    alone = run_trial(TrainConfig(task="iterater", strategy="lora", model="tiny-llama",
                                  data_dir=str(data_dir), **{**base, "eval_limit": 8}))
    assert [p["step"] for p in shared["curve"]] == [2, 4] and shared["curve_rows"] == 16
    for a, b in zip(shared["curve"], alone["curve"]):
        assert (a["macro_f1"], a["accuracy"]) == (b["macro_f1"], b["accuracy"])
    first, last = shared["curve"]
    assert 0 < first["train_time_s"] <= last["train_time_s"] <= shared["train_time_s"]
    assert 0 < first["train_cpu_s"] <= last["train_cpu_s"]
    assert run_trial(TrainConfig(task="iterater", strategy="lora", model="tiny-llama",
                                 data_dir=str(data_dir), **TINY))["curve"] == []  # off by default
    with pytest.raises(UserError, match="curve_every"):
        TrainConfig(curve_every=-1)


def test_curve_point_from_dev_predictions_scores_only_the_subset_rows():
    from datasets import Dataset

    from benchmark.trial import data
    from benchmark.trial.loop import _add_curve_point

    subset = Dataset.from_dict({data.ID_COLUMN: ["a", "b", "c"], "labels": [0, 1, 2]})
    predictions = {"a": {"label": 0, "predicted": 0}, "b": {"label": 1, "predicted": 1},
                   "c": {"label": 2, "predicted": 0}, "d": {"label": 2, "predicted": 1}}
    curve = []
    assert _add_curve_point(curve, {"step": 5}, predictions, subset, 3)
    assert curve[0]["step"] == 5 and curve[0]["accuracy"] == pytest.approx(2 / 3)
    assert curve[0]["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # "d" is not counted
    del predictions["c"]
    assert not _add_curve_point(curve, {"step": 6}, predictions, subset, 3) and len(curve) == 1


@pytest.mark.parametrize("strategy,options", [("lora", {}), ("lora", {"adapter": "dora"}),
                                              ("ir-tuning", {})])
def test_merged_adapters_predict_as_unmerged_and_leave_the_weights_as_they_were(
        strategy, options, data_dir):
    """Evaluation merges adapters into their base weights (faster): the same predictions,
    and afterwards every weight bit for bit as before, nothing left merged."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    from benchmark.trial.build import build_trial, endless
    from benchmark.trial.data import make_loader
    from benchmark.trial.loop import _evaluate, merged_adapters

    trial = build_trial(TrainConfig(task="iterater", strategy=strategy, model="minilm",
                                    data_dir=str(data_dir), strategy_options=options,
                                    lr=1e-2, **dict(TINY, eval_limit=64)))
    batches = endless(make_loader(trial.splits["train"], trial.tokenizer, 8, shuffle=True, seed=0))
    for step in range(3):  # LoRA's B leaves zero, so merging changes the weights
        trial.train_step([next(batches)], step)
    model = trial.model
    before = {name: value.clone() for name, value in model.state_dict().items()}
    evaluate = lambda: _evaluate(model, trial.splits["validation"], trial.tokenizer, 16,
                                 trial.device, trial.autocast_dtype, trial.task.label_names,
                                 keep_predictions=True)
    unmerged = evaluate()
    with merged_adapters(model):
        layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        assert layers and all(layer.merged for layer in layers)
        assert any(not torch.equal(before[n], v) for n, v in model.state_dict().items())
        merged = evaluate()
    assert merged["predictions"] == unmerged["predictions"]
    assert merged["macro_f1"] == unmerged["macro_f1"]
    assert not any(layer.merged for layer in layers)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
