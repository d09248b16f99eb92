"""`run --only`: a method from outside the repository, run under a small suite's settings and
ranked with that suite's committed trial files (real Ray Tune, MLflow SQLite, tiny-llama);
and the one-line refusals when the committed files were made under another setup."""

import hashlib
import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from strategies import INCLUDE_ENV, STRATEGIES

REPO = Path(__file__).resolve().parents[1]
BUDGET = {"max_steps": 4, "eval_every": 2, "batch_size": 8, "train_limit": 32,
          "eval_limit": 16, "test_limit": 16, "max_length": 48}
COMMITTED = {"head-only": {"search": {"lr": [1.0e-2]}},
             "lora": {"options": {"lora_r": 4, "lora_alpha": 8}}}
PLUGIN = '''
    """A strategy that lives outside the repository, as a method's author would write it."""
    import dataclasses
    from typing import ClassVar

    from strategies import register_strategy
    from strategies.layerwise import LayerwiseConfig, LayerwiseStrategy


    @dataclasses.dataclass
    class BottomBlocksConfig(LayerwiseConfig):
        k: int = 1


    @register_strategy
    class BottomBlocks(LayerwiseStrategy):
        name: ClassVar[str] = "bottom-blocks"
        description: ClassVar[str] = "the k lowest blocks, every step (a test plugin)"
        config_class = BottomBlocksConfig
        tiny_options = {"k": 1}

        def choose(self, step):
            return list(range(min(self.config.k, self.num_blocks)))
'''


def _suite(folder: Path, strategies: dict, **budget) -> Path:
    spec = {"name": "cmp", "model": "tiny-llama", "tasks": ["iterater"], "seeds": [0],
            "budget": {**BUDGET, **budget}, "strategies": strategies,
            "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1, "reuse_workers": True}}
    path = folder / f"cmp-{len(strategies)}-{budget.get('max_steps', 4)}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(folder: Path, suite: Path, data_dir: Path, *extra: str) -> list[str]:
    """`run` arguments that keep MLflow, results and Ray state inside `folder`."""
    return ["run", "--suite", str(suite), "--tracking-uri", f"sqlite:///{folder}/mlflow.db",
            "--data-dir", str(data_dir), "--results-dir", str(folder / "results"),
            "--storage-path", str(folder / "ray"), *extra]


@pytest.fixture
def plugin(tmp_path_factory, monkeypatch):
    """A folder outside the repository holding one strategy module; the registry forgets it
    (and the variable --include-path sets) after the test."""
    folder = tmp_path_factory.mktemp("my-method")
    assert REPO not in folder.parents
    (folder / "bottom_blocks.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.delenv(INCLUDE_ENV, raising=False)  # restored (unset) afterwards
    yield folder
    STRATEGIES._entries.pop("bottom-blocks", None)
    STRATEGIES._included.discard(str(folder))


@pytest.fixture(scope="module")
def committed(tmp_path_factory, data_dir):
    """The small suite's committed-style results: a normal `run` of its two entries."""
    folder = tmp_path_factory.mktemp("committed")
    assert main(_run(folder, _suite(folder, COMMITTED), data_dir)) == 0
    assert len(list((folder / "results" / "cmp" / "trials").glob("*.json"))) == 2
    return folder


def _comparable_rows(markdown: str) -> list[list[str]]:
    """The board's table rows without the columns that time or memory make vary by run."""
    tables = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in tables[0].strip("|").split("|")]
    keep = [i for i, name in enumerate(header) if name not in ("wall time (s)", "s to target")]
    # Tensor peaks are exact; the RSS beside them varies from process to process.
    rss = {i for i, name in enumerate(header) if name.startswith("peak memory (MiB)")}
    rows = []
    for line in tables:
        if line.startswith("|---"):
            continue
        cells = [c.strip().removesuffix(" (new)") for c in line.strip("|").split("|")]
        rows.append([cells[i].split(" / ")[0] if i in rss and cells != header else cells[i]
                     for i in keep if i < len(cells)])
    return rows


def test_a_method_from_outside_ranks_with_the_committed_files_as_in_a_full_run(
        committed, plugin, data_dir, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(committed, work)
    base = _suite(work, COMMITTED)
    before = {p.name: p.read_bytes() for p in (work / "results" / "cmp" / "trials").iterdir()}
    capsys.readouterr()
    assert main(_run(work, base, data_dir, "--only", "bottom-blocks", "--option", "k=2",
                     "--include-path", str(plugin))) == 0
    out = capsys.readouterr().out
    merged_dir = work / "results" / "cmp+bottom-blocks"
    assert "ranked with the 2 committed trial files" in out
    assert f"new trial files in {merged_dir / 'trials'}" in out
    # The committed folder is only read; the new trial goes to a folder of its own.
    assert {p.name: p.read_bytes() for p in (work / "results" / "cmp" / "trials").iterdir()} == before
    new_files = list((merged_dir / "trials").glob("*.json"))
    assert len(new_files) == 1 and json.loads(new_files[0].read_text())["trial"]["options"]["k"] == 2
    merged = (merged_dir / "leaderboard.md").read_text()
    assert "the committed trial files" in merged and "| bottom-blocks (new) |" in merged
    assert "| lora |" in merged  # the committed rows are not marked
    report = (merged_dir / "report.md").read_text()
    assert "## bottom-blocks: which blocks it trained" in report  # the new entry, not the suite's focus
    assert "| iterater | lora |" in report and "bottom-blocks (new)" in report
    comparison = json.loads((merged_dir / "comparison.json").read_text())
    assert comparison["committed"] == "../cmp" and comparison["include_path"] == [str(plugin)]
    # The new trial records its outside code by content, and its MLflow run says so too.
    code = json.loads(new_files[0].read_text())["strategy_code"]
    plugin_file = plugin / "bottom_blocks.py"
    assert code["outside_repository"] and code["layerwise"] is True
    assert code["sha256"] == hashlib.sha256(plugin_file.read_bytes()).hexdigest()
    from benchmark.sweep.tracking import connect, runs_of
    client = connect(f"sqlite:///{work}/mlflow.db")
    [run] = runs_of(client, client.get_experiment_by_name("cmp+bottom-blocks").experiment_id)
    assert run.data.tags["strategy_sha256"] == code["sha256"]
    assert run.info.run_name == "iterater/bottom-blocks/s0"
    assert f"python -m benchmark claims --from-results {merged_dir}" in out

    # The board again from the comparison's folder: the merged one (not a one-entry board),
    # left as it was, and the line says where it is.
    written = (merged_dir / "leaderboard.md").read_bytes()
    capsys.readouterr()
    assert main(["leaderboard", "--from-results", str(merged_dir)]) == 0
    out = capsys.readouterr().out
    assert f"leaderboard written to {merged_dir}/leaderboard.md and .html" in out
    assert (merged_dir / "leaderboard.md").read_bytes() == written
    # Its claims card: the new entry judged against the committed runs. The suite has no
    # layer-wise baseline, unless one is declared so (--kind); one seed: no solid gap.
    assert main(["claims", "--from-results", str(merged_dir)]) == 0
    card = (merged_dir / "claims.md").read_text()
    assert "# Claims card: suite `cmp+bottom-blocks`, focus `bottom-blocks`" in card
    assert "No layer-wise baselines on iterater" in card
    assert main(["claims", "--from-results", str(merged_dir), "--kind", "lora=layer-wise"]) == 0
    card = (merged_dir / "claims.md").read_text()
    assert "### 1. Outperforms the layer-wise baselines: **not supported**" in card
    assert "| lora | layer-wise |" in card and "| head-only | other |" in card
    assert f"--kind lora=layer-wise`" in card  # the line that reproduces it
    assert "No small-corpus suite results were found (by default `cmp-small`" in card
    # Its overhead reads from the store under the comparison's name; there is no suite file.
    from benchmark.tools.perf import suite_overhead
    capsys.readouterr()
    assert suite_overhead.main(["--suite", "cmp+bottom-blocks",
                                "--tracking-uri", f"sqlite:///{work}/mlflow.db"]) == 0
    overhead = capsys.readouterr().out
    assert "cmp+bottom-blocks" in overhead and "trials in this run / resumed (not counted) | 1 / 0" in overhead

    # A full run of the suite with the method as one more entry, from scratch elsewhere.
    full = tmp_path / "full"
    full.mkdir()
    suite = _suite(full, {**COMMITTED, "bottom-blocks": {"options": {"k": 2}}})
    assert main(_run(full, suite, data_dir, "--include-path", str(plugin))) == 0
    full_dir = full / "results" / "cmp"
    # The same trials (trial keys), and the same board: rows, ranks and p-values.
    assert sorted(p.name for p in (full_dir / "trials").iterdir()) == sorted(
        [*before, *(p.name for p in new_files)])
    board = (full_dir / "leaderboard.md").read_text()
    assert _comparable_rows(merged) == _comparable_rows(board)
    ranks = [row[:2] for row in _comparable_rows(board)[1:]]
    assert len(ranks) == 4 and {r[1] for r in ranks} >= {"bottom-blocks", "lora", "head-only"}
    assert all(row[3] not in ("", "–") for row in _comparable_rows(board)[2:4])  # p-values


FAILING = PLUGIN.replace("bottom-blocks", "failing-blocks").replace(
    "BottomBlocks", "FailingBlocks").replace(
    "return list(range(min(self.config.k, self.num_blocks)))",
    "raise ValueError(f'no block for step {step}')")


def test_an_outside_strategy_that_fails_keeps_its_traceback(committed, plugin, data_dir,
                                                            tmp_path, capsys):
    shutil.copytree(committed, tmp_path / "work")
    work = tmp_path / "work"
    (plugin / "failing_blocks.py").write_text(textwrap.dedent(FAILING))
    try:
        capsys.readouterr()
        assert main(_run(work, _suite(work, COMMITTED), data_dir, "--only", "failing-blocks",
                         "--include-path", str(plugin))) == 1
    finally:
        STRATEGIES._entries.pop("failing-blocks", None)
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if "failing-blocks/s0 FAILED" in l)
    # One line: the error and where it was raised, in the user's own file.
    assert "ValueError: no block for step 0 (at " in line and "failing_blocks.py:" in line
    [record] = [json.loads(p.read_text()) for p in
                (work / "results" / "cmp+failing-blocks" / "trials").glob("*.json")]
    assert record["status"] == "FAILED" and record["error"].startswith("ValueError: no block")
    assert "Traceback (most recent call last)" in record["traceback"]
    assert f"{plugin / 'failing_blocks.py'}\", line" in record["traceback"]


def _refusal(capsys, args) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_refuses_committed_files_made_under_another_budget(committed, plugin, data_dir, tmp_path,
                                                           capsys):
    shutil.copytree(committed / "results", tmp_path / "results")
    changed = _suite(tmp_path, COMMITTED, max_steps=6)
    line = _refusal(capsys, _run(tmp_path, changed, data_dir, "--only", "bottom-blocks",
                                 "--include-path", str(plugin)))
    assert line.startswith("error: the committed trial files in ") and "different budget" in line
    assert "(max_steps=4 there, max_steps=6 here)" in line
    assert not (tmp_path / "results" / "cmp+bottom-blocks").exists()
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything started


def test_refuses_committed_files_that_ran_in_another_precision(committed, plugin, data_dir,
                                                               tmp_path, capsys):
    from benchmark.trial.config import resolve_precision

    here = resolve_precision("auto", "cpu")[0]
    other = "fp32" if here == "bf16" else "bf16"
    shutil.copytree(committed / "results", tmp_path / "results")
    for path in (tmp_path / "results" / "cmp" / "trials").glob("*.json"):
        record = json.loads(path.read_text())
        record["run"]["precision"] = other  # as if made on a CPU that resolves auto otherwise
        path.write_text(json.dumps(record))
    line = _refusal(capsys, _run(tmp_path, _suite(tmp_path, COMMITTED), data_dir, "--only",
                                 "bottom-blocks", "--include-path", str(plugin)))
    assert "different precision (as resolved" in line and f"({other} there, {here} here)" in line


def test_refuses_other_data_and_a_taken_entry_name(committed, plugin, data_dir, tmp_path, capsys):
    shutil.copytree(committed / "results", tmp_path / "results")
    suite = _suite(tmp_path, COMMITTED)
    path = next((tmp_path / "results" / "cmp" / "trials").glob("*.json"))
    record = json.loads(path.read_text())
    first = next(iter(record["result"]["test_predictions"].values()))
    first["label"] = 1 - first["label"]  # one test label differs from the corpus here
    path.write_text(json.dumps(record))
    line = _refusal(capsys, _run(tmp_path, suite, data_dir, "--only", "bottom-blocks",
                                 "--include-path", str(plugin)))
    assert "different iterater data (test example ids and labels, digest)" in line
    line = _refusal(capsys, _run(tmp_path, suite, data_dir, "--only", "lora"))
    assert "already has an entry 'lora': name yours with --entry" in line


def test_include_path_and_entry_point_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(INCLUDE_ENV, raising=False)
    line = _refusal(capsys, ["list", "--include-path", str(tmp_path / "nowhere")])
    assert line == f"error: include path {tmp_path / 'nowhere'} does not exist"
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_here\n")
    monkeypatch.delenv(INCLUDE_ENV, raising=False)
    line = _refusal(capsys, ["list", "--include-path", str(broken)])
    assert "cannot import strategy module" in line and "No module named 'no_such_module_here'" in line
    taken = tmp_path / "taken.py"  # a built-in strategy's name
    taken.write_text(textwrap.dedent(PLUGIN).replace('"bottom-blocks"', '"lora"'))
    monkeypatch.delenv(INCLUDE_ENV, raising=False)
    line = _refusal(capsys, ["list", "--include-path", str(taken)])
    assert "strategy name 'lora' is registered twice" in line
    for path in (broken, taken):
        STRATEGIES._included.discard(str(path))


def test_a_package_registers_a_strategy_through_its_entry_point(tmp_path, monkeypatch):
    """An installed package (here: its files and dist-info on sys.path) whose entry point in
    the group revision_benchmark.strategies names its module."""
    (tmp_path / "my_peft").mkdir()
    (tmp_path / "my_peft" / "__init__.py").write_text(
        textwrap.dedent(PLUGIN).replace("bottom-blocks", "bottom-blocks-ep"))
    info = tmp_path / "my_peft-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-peft\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[revision_benchmark.strategies]\nbottom-blocks-ep = my_peft\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(STRATEGIES, "_discovered", False)  # as in a fresh process
    try:
        assert "bottom-blocks-ep" in STRATEGIES
    finally:
        STRATEGIES._entries.pop("bottom-blocks-ep", None)
        sys.modules.pop("my_peft", None)
