"""Bad input: one line on stderr, exit status 2, no traceback."""

import subprocess
import sys

import pytest

from benchmark.cli import main


def _fails_cleanly(capsys, argv, expected):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    # Progress lines may come first; the error itself is the one last line.
    assert err[-1].startswith("error:") and sum(l.startswith("error:") for l in err) == 1, err
    assert "Traceback" not in "\n".join(err)
    assert expected in err[-1]


@pytest.mark.parametrize("argv,expected", [
    (["train", "--task", "nope"], "unknown task 'nope'"),
    (["train", "--strategy", "nope"], "unknown strategy 'nope'"),
    (["train", "--strategy", "lisa", "--option", "gama=2"], "no option 'gama'"),
    (["train", "--strategy", "lisa", "--option", "gamma"], "KEY=VALUE"),
    (["train", "--max-steps", "abc"], "invalid int value"),
    (["train", "--max-steps", "0"], "at least 1"),
    (["train", "--model", "/no/such/model"], "does not exist"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_train_input(capsys, argv, expected, data_dir):
    _fails_cleanly(capsys, argv + ["--data-dir", str(data_dir)] if argv[0] == "train" else argv, expected)


def test_missing_data_names_the_files_and_the_source(capsys, tmp_path):
    _fails_cleanly(capsys, ["train", "--data-dir", str(tmp_path)], "wanyu/IteraTeR_human_sent")


def test_unknown_suite_malformed_yaml_and_bad_key(capsys, tmp_path):
    _fails_cleanly(capsys, ["run", "--suite", "nope", "--dry-run"], "unknown suite 'nope'")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntasks: [iterater\n")
    _fails_cleanly(capsys, ["run", "--suite", str(bad), "--dry-run"], "malformed YAML")
    bad.write_text("name: x\ntasks: [iterater]\nstrategies: {lora: {optionz: {}}}\n")
    _fails_cleanly(capsys, ["run", "--suite", str(bad), "--dry-run"], "unknown key 'optionz' in strategies.lora")
    bad.write_text("name: x\ntasks: [iterater]\nstrategies: {lora: {}}\nbudjet: {}\n")
    _fails_cleanly(capsys, ["run", "--suite", str(bad), "--dry-run"], f"{bad}: unknown key 'budjet'")
    bad.write_text("name: x\ntasks: [iterater]\nstrategies: {magic: {}}\n")
    _fails_cleanly(capsys, ["run", "--suite", str(bad), "--dry-run"], "unknown strategy 'magic'")
    bad.write_text("name: x\ntasks: [iterater]\nstrategies: {lora: {}}\nresources: {reuse_workers: 1}\n")
    _fails_cleanly(capsys, ["run", "--suite", str(bad), "--dry-run"],
                   "resources.reuse_workers must be true or false, got 1")


def test_unreachable_cluster_and_tracking_store(capsys, tmp_path):
    _fails_cleanly(capsys, ["run", "--suite", "smoke", "--address", "127.0.0.1:9",
                            "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], "cannot reach a Ray cluster")
    _fails_cleanly(capsys, ["run", "--suite", "smoke", "--tracking-uri", "http://127.0.0.1:9"],
                   "is not usable")
    _fails_cleanly(capsys, ["leaderboard", "--suite", "smoke", "--tracking-uri",
                            f"sqlite:///{tmp_path}/empty.db"], "no runs of suite 'smoke'")


def test_no_traceback_from_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmark", "train", "--task", "iterater",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "expected" in last


def test_dry_run_of_the_gpu_suite_prints_its_plan(capsys):
    assert main(["run", "--suite", "revisions-llm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "30 trials" in out and "1 GPU" in out and "Llama-3.1-8B-Instruct" in out
    assert out.count("seed 171") == 10


def test_list_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("iterater", "argrewrite-coarse", "ir-tuning", "lisa", "minilm", "smoke", "revisions"):
        assert name in out


def _on_a_terminal(code: str) -> bytes:
    """What a Python process running `code` writes to a terminal (a pseudo-terminal)."""
    import os
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdout is the terminal
        os.execv(sys.executable, [sys.executable, "-c", code])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    return out


def test_no_stray_colour_reset_after_the_last_line():
    """Ray's bundled colorama writes ESC[0m to a terminal at exit; a command does not."""
    ray_import = "import ray.autoscaler._private.cli_logger\n"
    assert b"\x1b[0m" in _on_a_terminal(ray_import + "print('plain')")
    out = _on_a_terminal(ray_import + "from benchmark.cli import main\nmain(['list'])")
    assert b"ir-tuning" in out and b"\x1b[0m" not in out


def test_help_lists_every_command_and_explains_the_paths(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "report,claims,list" in capsys.readouterr().out
    for command in ("run", "leaderboard", "report", "claims", "sync"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--results-dir RESULTS_DIR where" in text or "--results-dir RESULTS_DIR write" in text, command
        assert "--tracking-uri TRACKING_URI the MLflow tracking store" in text, command
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--data-dir DATA_DIR the folder holding the corpora" in " ".join(
        capsys.readouterr().out.split())


def test_a_missing_data_dir_is_named_as_typed(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fails_cleanly(capsys, ["run", "--suite", "smoke", "--data-dir", "../no/data"],
                   "under ../no/data;")
