import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("BENCHMARK_DATA_DIR", REPO.parent / "shared" / "data"))


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
