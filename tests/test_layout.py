"""How the code is laid out: layers and cycles (import-linter), one registry type, a
strategy that is one file, and a README whose options the CLI accepts."""

import importlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import build_parser
from benchmark.core.errors import UserError
from benchmark.core.registry import Registry

REPO = Path(__file__).resolve().parents[1]


def test_layers_import_one_way_and_no_module_imports_in_a_circle():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    done = subprocess.run([lint], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_registry_refuses_a_duplicate_and_suggests_the_closest_name():
    registry = Registry("widget")

    class Sprocket:
        pass

    class Other:
        pass

    registry.register("sprocket", Sprocket)
    registry.register("sprocket", Sprocket)  # the same class again (a reload): fine
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("sprocket", Other)
    with pytest.raises(UserError, match=r"unknown widget 'sprockt' \(did you mean 'sprocket'\?\)"):
        registry.get("sprockt")


def test_the_three_registries_are_one_type():
    import tasks
    from benchmark.trial.models import MODELS
    from strategies import STRATEGIES

    assert all(isinstance(r, Registry) for r in (STRATEGIES, tasks.TASKS, MODELS))
    with pytest.raises(UserError, match="did you mean 'ir-tuning'"):
        STRATEGIES.get("ir_tuning")
    with pytest.raises(UserError, match="did you mean 'iterater'"):
        tasks.get_task("iterator")


def test_a_new_strategy_is_one_new_file(tmp_path, data_dir):
    """Copy random_layers.py under a new name: it lists and trains, nothing else edited.
    In a copy of the packages, so that tests running beside this one never see the file."""
    checkout = tmp_path / "checkout"
    for package in ("benchmark", "strategies", "tasks"):
        shutil.copytree(REPO / package, checkout / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    source = (checkout / "strategies" / "random_layers.py").read_text()
    (checkout / "strategies" / "copied_layers.py").write_text(
        source.replace('name: ClassVar[str] = "random-layers"',
                       'name: ClassVar[str] = "copied-layers"'))
    # `python -m` puts the working directory first on sys.path: the copy, not the install.
    listed = subprocess.run([sys.executable, "-m", "benchmark", "list"], cwd=checkout,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "copied-layers" in listed.stdout
    out = tmp_path / "r.json"
    trained = subprocess.run(
        [sys.executable, "-m", "benchmark", "train", "--strategy", "copied-layers",
         "--model", "tiny-llama", "--max-steps", "2", "--data-dir", str(data_dir),
         "--out", str(out)], cwd=checkout, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert '"strategy": "copied-layers"' in out.read_text()
    assert not (REPO / "strategies" / "copied_layers.py").exists()


def _tool_parsers() -> dict[str, object]:
    """`python -m <module>` -> that command's argparse parser, for every command shipped."""
    parsers = {"benchmark": build_parser()}
    for path in sorted((REPO / "benchmark" / "tools").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        loaded = importlib.import_module(module)
        if hasattr(loaded, "build_parser"):
            parsers[module] = loaded.build_parser()
    return parsers


def _readme_commands(text: str) -> list[str]:
    """Every `python -m benchmark...` command in the README, in code blocks or inline code."""
    commands = []
    for line in text.splitlines():
        for span in re.findall(r"`([^`]+)`", line) or [line]:
            found = re.search(r"python -m (benchmark\S*)(.*)", span)
            if found:
                commands.append(found.group(1) + found.group(2))
    return commands


def test_every_option_the_readme_shows_is_accepted_by_the_cli():
    readme = (REPO / "README.md").read_text()
    parsers = _tool_parsers()
    commands = _readme_commands(readme)
    assert len(commands) > 10
    for command in commands:
        module, *argv = shlex.split(command, comments=True)
        argv = [a for a in argv if a not in ("\\", "&&", "...")]  # "..." elides the rest
        assert module in parsers, f"README runs {module}, which is not a command"
        try:
            parsers[module].parse_args(argv)
        except (UserError, SystemExit) as error:
            raise AssertionError(f"README command `python -m {command}` is refused: {error}")
    # Options named in prose (e.g. the list of `train` options) exist on some command.
    known = {option for parser in parsers.values() for option in _option_strings(parser)}
    ours = re.sub(r"`(mlflow|pip|ray|docker|kubectl) [^`]*`", "", readme)  # other tools' options
    shown = set(re.findall(r"(?:^|(?<=[\s`(\[]))(--[a-z][a-z0-9-]*)", ours, re.M))
    assert "--epochs" in shown and not shown - known, sorted(shown - known)


def _option_strings(parser) -> set[str]:
    options = set()
    for action in parser._actions:
        options.update(action.option_strings)
        for sub in (getattr(action, "choices", None) or {}).values() if isinstance(
                getattr(action, "choices", None), dict) else []:
            options.update(_option_strings(sub))
    return options
