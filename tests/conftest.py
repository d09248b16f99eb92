import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The README runs the tests with a relative BENCHMARK_DATA_DIR: resolve it against the
# directory pytest started in, and hand the absolute path on to the subprocesses and Ray
# workers that the tests start in other directories.
DATA_DIR = Path(os.environ.get("BENCHMARK_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
os.environ["BENCHMARK_DATA_DIR"] = str(DATA_DIR)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "iterater").is_dir():
        pytest.fail(f"corpora not found under {DATA_DIR}: set BENCHMARK_DATA_DIR")
    return DATA_DIR


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    # Tokenized and parsed caches go to a per-run folder, never the user's cache.
    os.environ.setdefault("BENCHMARK_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
