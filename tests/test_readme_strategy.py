"""The README's own outside strategy (`my_method.py` under "Write your own strategy") runs
as written from a folder outside the repository; strategies that break the loop's contract
are named before anything trains; a strategy from outside is recorded by its content."""

import hashlib
import re
import textwrap
from pathlib import Path

import pytest

from benchmark.cli import main
from strategies import INCLUDE_ENV, STRATEGIES

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny-llama", "--max-steps", "2", "--eval-every", "2", "--batch-size", "4",
        "--train-limit", "16", "--eval-limit", "8", "--test-limit", "8", "--max-length", "32"]


def readme_strategy() -> str:
    """The first Python block after the README's "Write your own strategy" heading."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("#### Write your own strategy"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """A folder outside the repository; the registry forgets what it imported from there."""
    assert REPO not in tmp_path.parents
    monkeypatch.delenv(INCLUDE_ENV, raising=False)
    before = set(STRATEGIES._entries)
    yield tmp_path
    for name in set(STRATEGIES._entries) - before:
        STRATEGIES._entries.pop(name)
    STRATEGIES._included.difference_update({p for p in STRATEGIES._included
                                            if str(tmp_path) in p})


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error:") and "Traceback" not in "\n".join(err), err
    return err[-1]


def test_the_readme_strategy_runs_as_written_and_is_recorded_by_content(outside, data_dir, capsys):
    from benchmark.sweep.trial_files import strategy_code

    path = outside / "my_method.py"
    path.write_text(readme_strategy())
    assert "from ." not in path.read_text()  # no relative import: it lives outside the package
    assert main(["list", "--include-path", str(path)]) == 0
    assert "ln-tuning" in capsys.readouterr().out
    out = outside / "result.json"
    assert main(["train", "--task", "iterater", "--strategy", "ln-tuning", "--include-path",
                 str(path), "--data-dir", str(data_dir), "--out", str(out), *TINY]) == 0
    assert out.exists()
    code = strategy_code("ln-tuning")
    assert code["outside_repository"] and code["layerwise"] is False
    assert code["file"] == str(path.resolve())
    assert code["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert strategy_code("lora") == {**strategy_code("lora"), "outside_repository": False,
                                     "file": "strategies/lora.py"}


BROKEN = {
    "no_prepare.py": ("", "does not implement prepare(model)"),
    "no_parts.py": ('''
        def prepare(self, model):
            model.requires_grad_(False)
            self.model = model
            return model
    ''', "prepare(model) does not set self.parts = split_model(model)"),
    "raises.py": ('''
        def prepare(self, model):
            raise RuntimeError("forgot the blocks")
    ''', "RuntimeError: forgot the blocks (at "),
}


@pytest.mark.parametrize("file_name", sorted(BROKEN))
def test_a_strategy_breaking_the_contract_is_named_before_training(outside, data_dir, capsys,
                                                                    file_name):
    body, expected = BROKEN[file_name]
    name = file_name[:-3].replace("_", "-")
    path = outside / file_name
    path.write_text(textwrap.dedent('''
        from strategies import register_strategy
        from strategies.base import Strategy


        @register_strategy
        class Broken(Strategy):
            name = "%s"
            description = "breaks the contract"
    ''' % name) + textwrap.indent(textwrap.dedent(body), "    "))
    assert main(["train", "--task", "iterater", "--strategy", name, "--include-path", str(path),
                 "--data-dir", str(data_dir), *TINY]) == 2
    line = _one_error_line(capsys)
    assert f"strategy '{name}' ({path.resolve()})" in line and expected in line, line
    if file_name == "raises.py":
        assert f"{path.resolve()}:" in line  # where it was raised: the user's own file


def test_an_unknown_strategy_says_outside_ones_need_include_path(outside, capsys):
    assert main(["train", "--strategy", "ln-tuning"]) == 2
    line = _one_error_line(capsys)
    assert "unknown strategy 'ln-tuning'" in line and "--include-path PATH" in line
