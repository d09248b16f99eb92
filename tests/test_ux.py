"""What a user sees: progress of `train`, quiet output, one-line errors for bad strategy
options (list options as a,b,c or [a,b,c]), and MLflow experiments that open on their
training runs with the runs' datasets filled in."""

import io
import json
import os
import subprocess
import sys

import pytest

from benchmark.cli import _parse_options
from benchmark.core.errors import UserError
from benchmark.trial.progress import StepProgress
from strategies import get_strategy

TINY_TRAIN = ["--model", "tiny-llama", "--strategy", "lora", "--max-steps", "4",
              "--eval-every", "2", "--batch-size", "4", "--train-limit", "16",
              "--eval-limit", "8", "--test-limit", "8", "--max-length", "32"]


def _train(tmp_path, *extra):
    return subprocess.run([sys.executable, "-m", "benchmark", "train", *TINY_TRAIN, *extra,
                           "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


# -- list options and bad values ------------------------------------------------------------

def test_list_options_take_commas_or_yaml_and_values_take_their_declared_type():
    commas = get_strategy("lora", _parse_options(["target_modules=q_proj,v_proj", "lora_dropout=0"]))
    yaml = get_strategy("lora", _parse_options(["target_modules=[q_proj, v_proj]"]))
    assert commas.config.target_modules == yaml.config.target_modules == ["q_proj", "v_proj"]
    assert commas.config.lora_dropout == 0.0 and isinstance(commas.config.lora_dropout, float)
    blocks = get_strategy("random-layers", _parse_options(["fixed_blocks=0,2", "k=2"]))
    assert blocks.config.fixed_blocks == [0, 2]
    window = get_strategy("ir-tuning", _parse_options(["window=0.3,0.6"]))
    assert window.config.window == (0.3, 0.6)
    assert get_strategy("top-layers", _parse_options(["k=none"])).config.k is None


@pytest.mark.parametrize("strategy,option,expected", [
    ("lora", "lora_r=abc", "option lora_r=abc is not valid; it takes an integer"),
    ("lora", "lora_r=2.5", "it takes an integer"),
    ("lora", "adapter=lorra", "it takes one of lora, dora"),
    ("random-layers", "fixed_blocks=a,b", "fixed_blocks=a,b is not valid; it takes a list of integers as a,b,c or [a,b,c]"),
    ("ir-tuning", "window=0.3", "it takes 2 numbers as a,b"),
])
def test_a_bad_option_value_names_the_option_and_what_it_takes(strategy, option, expected):
    with pytest.raises(UserError) as raised:
        get_strategy(strategy, _parse_options([option]))
    assert expected in str(raised.value)


def test_bad_options_through_train_are_one_line_exit_2(tmp_path, data_dir):
    """A bad value fails before any work; a target that matches no layer only once the
    model is there (after the one 'training ...' line): both one error line, exit 2."""
    proc = _train(tmp_path, "--option", "lora_r=abc")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: strategy 'lora': option lora_r=abc is not valid; it takes an integer"]

    proc = _train(tmp_path, "--option", "target_modules=q_proj,nope")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("training lora on iterater") and len(lines) == 2, lines
    assert lines[1].startswith("error: option target_modules: nope matches no linear layer")
    assert "q_proj" in lines[1] and "down_proj" in lines[1]  # what it accepts


# -- progress and quiet output --------------------------------------------------------------

def test_train_prints_progress_and_nothing_from_the_libraries(tmp_path, data_dir):
    proc = _train(tmp_path, "--option", "target_modules=q_proj,v_proj")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    # Only our own lines: the header, progress (not a terminal: plain lines) and evaluations.
    assert lines[0].startswith("training lora")
    assert all(line.startswith("  step ") for line in lines[1:]), lines
    assert "  step 1/4 (25%): loss not checked yet" in lines[1]
    assert any(line.startswith("  step 4/4 (100%): loss ") and "s/step" in line for line in lines)
    assert any("dev macro F1" in line for line in lines)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["strategy_options"]["target_modules"] == ["q_proj", "v_proj"]


def test_verbose_keeps_what_quiet_filters():
    """Library FutureWarnings and log lines (e.g. bitsandbytes' missing-kernels warning,
    on CPUs with AVX512-BF16): gone by default, there with --verbose."""
    code = ("import sys, warnings; from benchmark.core.quiet import quiet; "
            "quiet(sys.argv[1] == 'verbose'); import bitsandbytes; "
            "import transformers.utils.logging as l; "
            "warnings.warn_explicit('deprecated', FutureWarning, 'x.py', 1, module='transformers.x'); "
            "l.get_logger('transformers.x').warning('advice'); print('done', file=sys.stderr)")
    # A user's shell: not the variables an earlier in-process `main()` left in this one.
    from benchmark.core.quiet import QUIET_ENV, VERBOSE_ENV

    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV and k != VERBOSE_ENV}
    out = {mode: subprocess.run([sys.executable, "-c", code, mode], capture_output=True,
                                text=True, timeout=120, env=env).stderr
           for mode in ("quiet", "verbose")}
    assert out["quiet"].strip() == "done", out["quiet"]
    assert "FutureWarning: deprecated" in out["verbose"] and "advice" in out["verbose"]


def test_progress_lines_off_a_terminal_every_tenth_and_every_30_seconds():
    now = [0.0]
    stream = io.StringIO()
    progress = StepProgress(stream, tty=False, clock=lambda: now[0])
    for step in range(1, 101):
        now[0] += 1.0 if step != 50 else 40.0  # one slow step (an evaluation)
        progress.step(step, 100, 1.5 if step % 20 == 0 else None, 1.0)
    lines = stream.getvalue().splitlines()
    steps = [int(line.split()[1].split("/")[0]) for line in lines]
    assert steps == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert lines[0] == "  step 1/100 (1%): loss not checked yet, 1.00 s/step, 1.6 min left"
    assert "loss 1.5000" in lines[2] and lines[-1].endswith("0 s left")
    now[0] = 0.0  # 30 s apart: a line even between tenths
    stream = io.StringIO()
    progress = StepProgress(stream, tty=False, clock=lambda: now[0])
    for step in range(1, 1001):
        now[0] += 3.0
        progress.step(step, 1000, None, 3.0)
    steps = [int(line.split()[1].split("/")[0]) for line in stream.getvalue().splitlines()]
    assert steps[:4] == [1, 11, 21, 31] and 100 in steps and steps[-1] == 1000


def test_progress_bar_on_a_terminal():
    stream = io.StringIO()
    progress = StepProgress(stream, tty=True)
    for step in range(1, 5):
        progress.step(step, 4, 0.75 if step == 2 else None, 0.01)
        if step == 2:
            progress.write("  step 2: dev macro F1 0.5000")
    progress.close()
    text = stream.getvalue()
    assert "4/4" in text and "loss 0.7500" in text and "step 2: dev macro F1 0.5000" in text


# -- MLflow -----------------------------------------------------------------------------------

def test_experiments_open_on_training_runs_and_runs_log_their_dataset(tmp_path, data_dir):
    from mlflow.tracking import MlflowClient

    from benchmark.sweep.tracking import (EXPERIMENT_KIND_TAG, TrialLogger, connect,
                                          corpus_splits, experiment_id, experiment_link)

    uri = f"sqlite:///{tmp_path}/m.db"
    client = connect(uri)
    exp = experiment_id(client, "ux", uri)
    assert client.get_experiment(exp).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    old = client.create_experiment("made-before")  # an experiment an older version made
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert experiment_id(client, "made-before", uri) == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    # MLflow 3.17's UI decides by its own GenAI / Model training switch: the link asks.
    assert experiment_link("http://host:5000/", exp) == (
        f"http://host:5000/#/experiments/{exp}?workflowType=machine_learning")
    assert f"--backend-store-uri {uri}`" in experiment_link(uri, exp)

    corpus = corpus_splits("iterater", str(data_dir))
    trial = {"task": "iterater", "strategy": "lora", "seed": 0, "model": "tiny-llama",
             "budget": {"train_limit": 16, "test_limit": 10000}, "hyperparameters": {},
             "options": {}}
    logger = TrialLogger(client, exp, "ux", trial, "key", "ray-1", corpus=corpus)
    inputs = MlflowClient(uri).get_run(logger.run_id).inputs.dataset_inputs
    by_context = {i.tags[0].value: i.dataset for i in inputs}
    assert set(by_context) == {"train", "validation", "test"}
    assert all(d.name == "iterater" and len(d.digest) == 16 for d in by_context.values())
    assert len({d.digest for d in by_context.values()}) == 3  # each split its own content
    train, test = (json.loads(by_context[s].profile) for s in ("train", "test"))
    assert train["num_rows"] == 16 and train["corpus_rows"] == corpus["train"]["rows"] > 16
    assert test["num_rows"] == corpus["test"]["rows"]  # a limit above the split: all of it
    assert corpus_splits("iterater", str(data_dir))["train"]["digest"] == corpus["train"]["digest"]
