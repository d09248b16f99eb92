"""Data-parallel trials: Ray Train workers on gloo, with DeepSpeed ZeRO, through the one
training loop; checked against a single plain process on the same global batches."""

import json
import subprocess
import sys

import pytest
import yaml

from benchmark.cli import main
from benchmark.tools.parity import parity_strategies, report, run_parity
from benchmark.sweep.tracking import connect, runs_of

# Two workers average their halves' gradients: the same update as one process on the
# whole batch, up to float summation order (measured: at most 2.4e-7 over 4 steps).
LOSS_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def zero2_parity():
    return run_parity(workers=2, deepspeed="zero2")


def test_two_zero2_workers_match_one_process_for_every_strategy(zero2_parity):
    table, problems = report(zero2_parity, LOSS_TOLERANCE)
    assert not problems, "\n".join(problems) + "\n" + table
    assert [r["ir-tuning"]["world_size"] for r in zero2_parity["workers"]] == [2, 2]
    assert set(zero2_parity["single"]) == set(parity_strategies("zero2"))


def test_layerwise_strategies_really_freeze_blocks_under_zero2(zero2_parity):
    # The invariant (changed == selected on every worker) means something only if some
    # block sat out a step and trained again later, where ZeRO's optimizer would move it.
    for name in ("ir-tuning", "lisa", "random-layers"):
        rank0 = zero2_parity["workers"][0][name]
        assert any(len(s) < 4 for s in rank0["selected"]), (name, rank0["selected"])
        unfrozen_later = any(i not in rank0["selected"][step] and i in rank0["selected"][later]
                             for step in range(4) for later in range(step + 1, 4) for i in range(4))
        assert unfrozen_later, (name, rank0["selected"])
        assert rank0["changed"] == rank0["selected"]


def test_zero3_workers_match_one_process():
    # One layer-wise strategy: ZeRO-3 partitions parameters too, the case ZeRO-2 leaves out.
    parity = run_parity(workers=2, deepspeed="zero3", strategies=["ir-tuning"])
    table, problems = report(parity, LOSS_TOLERANCE)
    assert not problems, "\n".join(problems) + "\n" + table


def _suite(tmp_path, distributed, strategies=None):
    spec = {"name": "dist", "model": "tiny-llama", "tasks": ["iterater"], "seeds": [0],
            "budget": {"max_steps": 4, "eval_every": 2, "batch_size": 8, "train_limit": 32,
                       "eval_limit": 16, "test_limit": 16, "max_length": 48},
            "strategies": strategies or {"ir-tuning": {"options": {"lora_r": 4, "lora_alpha": 8}}},
            "resources": {"max_concurrent_trials": 1}, "distributed": distributed}
    path = tmp_path / "dist.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_suite_trial_runs_on_two_deepspeed_workers_inside_tune(tmp_path, data_dir):
    suite = _suite(tmp_path, {"workers": 2, "cpus_per_worker": 1, "deepspeed": "zero2"})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", "--suite", str(suite), "--tracking-uri", uri, "--data-dir", str(data_dir),
                 "--results-dir", str(tmp_path / "results"),
                 "--storage-path", str(tmp_path / "ray")]) == 0
    client = connect(uri)
    (run,) = runs_of(client, client.get_experiment_by_name("dist").experiment_id)
    assert run.info.status == "FINISHED"
    # Dev metrics of every evaluation reached MLflow through Ray Train -> Tune -> driver.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_macro_f1")] == [2, 4]
    assert run.data.params["config.deepspeed"] == "zero2"
    assert run.data.tags["workers"] == "2" and run.data.tags["deepspeed"] == "zero2"
    result = json.loads(open(client.download_artifacts(run.info.run_id, "result.json",
                                                       str(tmp_path))).read())
    assert result["environment"]["world_size"] == 2
    assert result["environment"]["rendezvous_port"] not in (None, "29500")
    # Each worker sampled its own process; the trial's peak is their sum.
    assert result["memory_workers"] == 2
    assert result["peak_memory_mb"] >= 2 * 0.9 * result["peak_memory_mb_max_worker"]
    assert len(result["selection_trace"]) == 4


def test_single_process_zero3_trial_runs_from_the_cli(tmp_path, data_dir):
    out = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmark", "train", "--model", "tiny-llama", "--task", "iterater",
         "--strategy", "ir-tuning", "--max-steps", "4", "--eval-every", "2", "--batch-size", "8",
         "--train-limit", "32", "--eval-limit", "16", "--test-limit", "16", "--max-length", "48",
         "--deepspeed", "zero3", "--data-dir", str(data_dir), "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["config"]["deepspeed"] == "zero3"
    assert result["environment"]["world_size"] == 1
    # Test was evaluated on the restored (gathered, then re-partitioned) best weights.
    assert 0 <= result["test"]["macro_f1"] <= 1 and result["best_step"] in (2, 4)


@pytest.mark.parametrize("distributed,strategies,message", [
    ({"workers": 2, "gpus_per_worker": 0.5}, None, "fractional GPUs suit single-process trials"),
    ({"workers": 2, "deepspeed": "zero2"},
     {"random-layers": {"options": {"optimizer_state": "drop"}}}, "cannot run under DeepSpeed ZeRO"),
    ({"workers": 2, "deepspeed": "zero4"}, None, "must be none, zero2 or zero3"),
    ({"workers": 2, "nodes": 2}, None, "unknown key 'nodes' in distributed"),
])
def test_bad_distributed_settings_are_one_line_errors(tmp_path, capsys, distributed, strategies,
                                                     message):
    suite = _suite(tmp_path, distributed, strategies)
    assert main(["run", "--suite", str(suite), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_zero3_refuses_the_weight_metric_before_loading_anything(tmp_path, capsys, data_dir):
    assert main(["train", "--model", "tiny-llama", "--option", "metric=weight",
                 "--deepspeed", "zero3", "--data-dir", str(data_dir),
                 "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "ZeRO-3" in err
    assert not (tmp_path / "r.json").exists()
