"""Tests of the task registry and the data loaders (against the offline data mirror)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmark.core.errors import UserError
from tasks import Task, fetch_data, get_task, list_tasks, register_task, resolve_data_dir

DATA_DIR = Path(os.environ.get("BENCHMARK_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
REPO_ROOT = Path(__file__).resolve().parents[1]

ITERATER_LABELS = ("clarity", "fluency", "coherence", "style", "meaning-changed")


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    """Point the parse cache at an empty directory for this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCHMARK_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def iterater():
    return get_task("iterater").load(DATA_DIR)


@pytest.fixture(scope="module")
def argrewrite(fresh_cache):
    return get_task("argrewrite").load(DATA_DIR)  # parses the workbooks (cold cache)


@pytest.fixture(scope="module")
def argrewrite_coarse(argrewrite):
    return get_task("argrewrite-coarse").load(DATA_DIR)  # from the parse cache


# --------------------------------------------------------------------------- registry


def test_import_is_light():
    code = "import sys, tasks; print(sorted(m for m in ('torch', 'datasets', 'openpyxl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_registry():
    assert list_tasks() == ["argrewrite", "argrewrite-coarse", "iterater"]
    for name in list_tasks():
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
        assert task.label_names and task.num_labels == len(task.label_names)
        for attr in ("description", "source", "task_instruction"):
            value = getattr(task, attr)
            assert isinstance(value, str) and value and "\n" not in value


def test_unknown_task_raises_user_error():
    with pytest.raises(UserError) as err:
        get_task("no-such-task")
    assert "iterater" in str(err.value) and "argrewrite" in str(err.value)


def test_register_task_rejects_a_name_clash():
    class Clash(Task):
        name = "iterater"
        label_names = ("a", "b")

    with pytest.raises(ValueError):
        register_task(Clash)
    assert type(get_task("iterater")).__name__ == "IteraTeRTask"


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCHMARK_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCHMARK_DATA_DIR", "../shared")  # as the README gives it
    assert resolve_data_dir() == tmp_path / ".." / "shared"
    monkeypatch.delenv("BENCHMARK_DATA_DIR")
    default = resolve_data_dir()
    assert default.name == "data" and "revision-benchmark" in str(default)


# --------------------------------------------------------------------------- IteraTeR


def test_iterater_counts_and_labels(iterater):
    assert {split: len(ds) for split, ds in iterater.items()} == {"train": 3215, "validation": 385, "test": 360}
    for ds in iterater.values():
        assert tuple(ds.features["label"].names) == ITERATER_LABELS
        assert {"before", "after", "label", "doc_id", "revision_depth"} <= set(ds.column_names)
        assert set(ds["label"]) == set(range(5))
    assert Counter(iterater["test"]["label"]) == {0: 186, 1: 88, 2: 36, 3: 15, 4: 35}


def test_iterater_has_no_others(iterater):
    assert "others" not in get_task("iterater").label_names
    for ds in iterater.values():
        assert all(isinstance(t, str) for t in list(ds["before"]) + list(ds["after"]))


def test_iterater_bad_json_is_a_user_error(tmp_path):
    root = tmp_path / "iterater" / "human_sent_level"
    root.mkdir(parents=True)
    for name in ("train.json", "dev.json", "test.json"):
        (root / name).write_text(json.dumps({"before_sent": "a", "after_sent": "b", "labels": "clarity",
                                             "doc_id": "x", "revision_depth": 1}) + "\n")
    (root / "dev.json").write_text("{not json\n")
    with pytest.raises(UserError, match="dev.json:1"):
        get_task("iterater").load(tmp_path)


# --------------------------------------------------------------------------- ArgRewrite


def test_argrewrite_splits_are_disjoint_by_essay(argrewrite):
    essays = {split: set(ds["essay_id"]) for split, ds in argrewrite.items()}
    assert not essays["train"] & essays["validation"]
    assert not essays["train"] & essays["test"]
    assert not essays["validation"] & essays["test"]
    total = sum(len(e) for e in essays.values())
    assert total == 86
    for split, share in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        assert abs(len(essays[split]) / total - share) < 0.05, (split, len(essays[split]))


def test_argrewrite_labels_and_operations(argrewrite):
    n_labels = len(get_task("argrewrite").label_names)
    for ds in argrewrite.values():
        assert all(0 <= y < n_labels for y in ds["label"])
        for row in ds:
            assert row["operation"] in ("Add", "Delete", "Modify")
            if row["operation"] == "Add":
                assert row["before"] == "" and row["after"]
            elif row["operation"] == "Delete":
                assert row["after"] == "" and row["before"]
            else:
                assert row["before"] and row["after"]
            assert row["draft_pair"] in ("12", "23") and row["condition"] in "ABCD"
    labels = Counter(y for ds in argrewrite.values() for y in ds["label"])
    assert set(labels) == set(range(n_labels))  # every label occurs
    assert sum(labels.values()) == 3236
    ops = Counter(op for ds in argrewrite.values() for op in ds["operation"])
    assert set(ops) == {"Add", "Delete", "Modify"}


def test_argrewrite_merges(argrewrite):
    from tasks.argrewrite import LABEL_MERGES

    names = argrewrite["train"].features["label"].names
    for original, merged in LABEL_MERGES.items():
        assert original not in names and merged in names
    rows = [r for ds in argrewrite.values() for r in ds if r["purpose"] in LABEL_MERGES]
    assert rows and all(names[r["label"]] == LABEL_MERGES[r["purpose"]] for r in rows)


def test_argrewrite_split_is_deterministic(argrewrite, fresh_cache):
    again = get_task("argrewrite").load(DATA_DIR)  # from the cache written by the first load
    from tasks.argrewrite import SUBDIR, parsed_revisions

    reparsed = parsed_revisions(DATA_DIR / SUBDIR, use_cache=False)
    assert len([r for r in reparsed if len(r["purposes"]) == 1 and r["purposes"][0] != "Unannotated"]) == 3236
    for split in ("train", "validation", "test"):
        assert again[split].to_dict() == argrewrite[split].to_dict()


def test_argrewrite_coarse_same_rows(argrewrite, argrewrite_coarse):
    from tasks.argrewrite import COARSE_OF_PURPOSE

    coarse_names = argrewrite_coarse["train"].features["label"].names
    assert len(coarse_names) == 2 and set(coarse_names) == {"surface", "content"}
    for split in ("train", "validation", "test"):
        fine, coarse = argrewrite[split], argrewrite_coarse[split]
        for col in ("before", "after", "essay_id", "revision_id", "purpose", "operation"):
            assert list(fine[col]) == list(coarse[col])
        assert [coarse_names[y] for y in coarse["label"]] == [COARSE_OF_PURPOSE[p] for p in coarse["purpose"]]


# --------------------------------------------------------------------------- missing data, fetch


@pytest.mark.parametrize(
    "task, expected_file, source",
    [
        ("iterater", "train.json", "wanyu/IteraTeR_human_sent"),
        ("argrewrite", "Annotation_", "omidkashefi/ArgRewrite"),
        ("argrewrite-coarse", "Annotation_", "omidkashefi/ArgRewrite"),
    ],
)
def test_missing_data_is_a_one_line_user_error(tmp_path, task, expected_file, source):
    missing = tmp_path / "no-data-here"
    with pytest.raises(UserError) as err:
        get_task(task).load(missing)
    message = str(err.value)
    assert "\n" not in message
    assert expected_file in message and source in message and str(missing) in message
    assert "python -m benchmark data fetch" in message


def _no_network(*args, **kwargs):
    raise OSError("network disabled in tests")


def test_fetch_offline_is_a_one_line_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _no_network)
    with pytest.raises(UserError) as err:
        fetch_data(["iterater"], data_dir=tmp_path)
    assert "\n" not in str(err.value) and "huggingface.co" in str(err.value)
    with pytest.raises(UserError) as err:
        fetch_data(data_dir=tmp_path)
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_fetch_skips_corpora_already_present(monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _no_network)
    assert fetch_data(data_dir=DATA_DIR) == DATA_DIR
    assert fetch_data(["argrewrite-coarse"], data_dir=DATA_DIR) == DATA_DIR


def test_fetch_unknown_name():
    with pytest.raises(UserError, match="unknown data set"):
        fetch_data(["nope"], data_dir="/nonexistent")


def test_fetch_layout_with_stubbed_downloads(tmp_path, monkeypatch):
    """The download plumbing (not the network) puts files where the loaders look."""
    import io
    import urllib.request
    import zipfile

    import huggingface_hub

    class _Conn:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    workbook = DATA_DIR / "argrewrite/dataset/annotations/A/12/Annotation_2018argrewrite_1_NEW.txt.xlsx"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(workbook, "ArgRewrite-master/dataset/annotations/A/12/" + workbook.name)
        zf.writestr("ArgRewrite-master/README.md", "stub")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: _Conn())
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(archive.getvalue()))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, repo_type, filename: str(DATA_DIR / "iterater/human_sent_level" / filename))
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(tmp_path / "cache"))
    root = fetch_data(data_dir=tmp_path / "data")
    assert (root / "argrewrite/README.md").is_file()
    assert len(get_task("iterater").load(root)["test"]) == 360
    ds = get_task("argrewrite").load(root)
    assert set(ds["train"]["essay_id"]) == {"1"} and len(ds["test"]) == 0
