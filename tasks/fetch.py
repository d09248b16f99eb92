"""Download the corpora from their public sources into the data-directory layout.

Layout (the same as the offline mirror the tests use):

- ``iterater/human_sent_level/{train,dev,test}.json`` from the HF hub dataset
  ``wanyu/IteraTeR_human_sent`` (files ``train.json``, ``dev.json``, ``test.json``);
- ``argrewrite/...`` from the GitHub archive of ``omidkashefi/ArgRewrite`` (the repository
  root becomes ``argrewrite/``, so workbooks land in ``argrewrite/dataset/annotations/``).

A corpus whose files are already present is skipped. Before downloading, the host is
probed with a 3 s socket connect so that an offline machine gets one clear line instead
of a long network timeout. Not exercised against the real network in the test suite.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable

from benchmark.core.errors import UserError
from tasks.base import DATA_DIR_ENV, one_line, resolve_data_dir

HF_REPO = "wanyu/IteraTeR_human_sent"
ITERATER_FILES = ("train.json", "dev.json", "test.json")
ARGREWRITE_ZIPS = (
    "https://github.com/omidkashefi/ArgRewrite/archive/refs/heads/master.zip",
    "https://github.com/omidkashefi/ArgRewrite/archive/refs/heads/main.zip",
)

ARGREWRITE_SUBDIR = Path("argrewrite") / "dataset" / "annotations"

#: corpus -> host probed before downloading it
HOSTS = {"iterater": "huggingface.co", "argrewrite": "github.com"}
#: task or corpus name -> corpus
CORPUS_OF = {"iterater": "iterater", "argrewrite": "argrewrite", "argrewrite-coarse": "argrewrite"}


def _present(corpus: str, root: Path) -> bool:
    if corpus == "iterater":
        return all((root / "iterater" / "human_sent_level" / f).is_file() for f in ITERATER_FILES)
    return bool(annotation_files(root / ARGREWRITE_SUBDIR))


def annotation_files(annotations_dir: Path) -> list[Path]:
    """The annotation workbooks under `annotations_dir`, sorted by relative path."""
    if not annotations_dir.is_dir():
        return []
    files = [
        p
        for p in annotations_dir.glob("*/*/*.xlsx")
        if p.name.startswith("Annotation_") and p.is_file()
    ]
    return sorted(files, key=lambda p: p.relative_to(annotations_dir).as_posix())


def _check_network(host: str, port: int = 443, timeout: float = 3.0) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise UserError(
            one_line(
                f"cannot reach {host}:{port} ({exc.__class__.__name__}: {exc}); no network? "
                f"Download the corpora elsewhere and point {DATA_DIR_ENV} at them."
            )
        ) from None


def _fetch_iterater(root: Path) -> None:
    from huggingface_hub import hf_hub_download

    target = root / "iterater" / "human_sent_level"
    target.mkdir(parents=True, exist_ok=True)
    for name in ITERATER_FILES:
        try:
            cached = hf_hub_download(repo_id=HF_REPO, repo_type="dataset", filename=name)
        except Exception as exc:  # HfHubHTTPError, connection errors, ...
            raise UserError(one_line(f"downloading {name} from HF hub {HF_REPO} failed: {exc}")) from None
        shutil.copyfile(cached, target / name)


def _fetch_argrewrite(root: Path) -> None:
    import urllib.error
    import urllib.request

    target = root / "argrewrite"
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "argrewrite.zip"
        for url in ARGREWRITE_ZIPS:
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as out:
                    shutil.copyfileobj(response, out)
                break
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{url}: {exc}")
        else:
            raise UserError(one_line(f"downloading ArgRewrite failed: {'; '.join(errors)}"))
        try:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    parts = Path(info.filename).parts[1:]  # drop "ArgRewrite-<branch>/"
                    if not parts or info.is_dir() or ".." in parts or Path(info.filename).is_absolute():
                        continue
                    dest = target.joinpath(*parts)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
        except zipfile.BadZipFile as exc:
            raise UserError(f"the ArgRewrite archive is not a valid zip file: {exc}") from None


FETCHERS = {"iterater": _fetch_iterater, "argrewrite": _fetch_argrewrite}


def fetch_data(names: str | Iterable[str] | None = None, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Download the corpora of `names` (task or corpus names; default all) into the data dir.

    Returns the data directory. Corpora already present are left alone.
    """
    if names is None:
        wanted = list(FETCHERS)
    else:
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in CORPUS_OF]
        if unknown:
            raise UserError(f"unknown data set(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(CORPUS_OF))}")
        wanted = list(dict.fromkeys(CORPUS_OF[n] for n in names))

    root = resolve_data_dir(data_dir)
    todo = [c for c in wanted if not _present(c, root)]
    for corpus in todo:
        _check_network(HOSTS[corpus])
    try:
        root.mkdir(parents=True, exist_ok=True)
        for corpus in todo:
            FETCHERS[corpus](root)
    except OSError as exc:
        raise UserError(one_line(f"cannot write the data under {root}: {exc}")) from None
    for corpus in todo:
        if not _present(corpus, root):
            raise UserError(f"{corpus}: download finished but the expected files are still missing under {root}")
    return root


def fetch_into_default_cache(task: str, data_dir) -> bool:
    """When no data directory was named (neither argument nor $BENCHMARK_DATA_DIR), try to
    fill the per-user cache from the public sources; False when offline or not applicable."""
    if (data_dir is not None and str(data_dir) != "") or os.environ.get(DATA_DIR_ENV):
        return False
    try:
        fetch_data(task, None)
    except UserError:
        return False
    return True
