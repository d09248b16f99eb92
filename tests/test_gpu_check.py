"""benchmark.gpu_check: the tiny size runs the whole path (every strategy through
run_trial, the table, the JSON) on a CPU; the 1B model is checked by shape only here."""

import json

import pytest
import torch

from benchmark.tools import gpu_check
from strategies import STRATEGIES
from benchmark.trial.models import MODELS, llama_1b_config


def test_tiny_check_runs_every_strategy_and_reports_speed_and_memory(tmp_path, data_dir, capsys):
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--size", "tiny", "--max-steps", "2", "--batch-size", "4",
                           "--eval-rows", "8", "--data-dir", str(data_dir), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["model"] == "tiny-llama" and report["max_steps"] == 2
    rows = {row["strategy"]: row for row in report["rows"]}
    assert list(rows) == STRATEGIES.names()
    for strategy, row in rows.items():
        assert "error" not in row, row
        assert row["steps_per_s"] > 0 and row["peak_memory_mb"] > 100, row  # RSS of a torch process
        assert row["memory_source"] == ("rss" if row["device"] == "cpu" else "nvml-process")
        assert f"| {strategy} | {row['steps_per_s']:,.2f} |" in printed
    assert rows["full-ft"]["trainable_share"] == 1.0
    assert rows["lora"]["trainable_share"] < 0.5


def test_the_1b_model_is_about_a_billion_parameters_and_runs_in_bf16_on_cuda():
    assert "llama-1b-random" in MODELS
    with torch.device("meta"):  # the shape only: no 4 GB of weights on this machine
        from transformers import LlamaForSequenceClassification

        model = LlamaForSequenceClassification(llama_1b_config(30522, 5, 0))
    assert 0.95e9 < sum(p.numel() for p in model.parameters()) < 1.15e9
    config = gpu_check.check_config("lora", "1b", gpu_check.build_parser().parse_args([]), "data")
    assert (config.model, config.precision, config.device) == ("llama-1b-random", "bf16", "cuda")
    assert (config.max_steps, config.batch_size, config.max_length) == (30, 16, 128)
    assert config.train_limit == 30 * 16 and config.eval_every == 30


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_1b_check_stops_with_one_line(capsys):
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no GPU") and "\n" not in err


def test_an_unknown_strategy_is_refused_before_any_work(capsys):
    assert gpu_check.main(["--size", "tiny", "--strategies", "lora,top-k"]) == 2
    assert "unknown strategy top-k" in capsys.readouterr().err
