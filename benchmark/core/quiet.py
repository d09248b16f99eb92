"""Quiet by default: warnings from third-party libraries that a user of the benchmark
cannot act on (deprecations inside transformers, peft or torch, an optional kernel
package bitsandbytes did not find, DeepSpeed's accelerator detection, Ray's start-up
lines) are filtered from `train` and `run`; `--verbose` keeps them.

The filters use the warnings and logging modules, never a redirected stderr: our own
lines and every error still come through. The choice travels to Ray workers in the
environment (BENCHMARK_VERBOSE and the libraries' own variables), where `quiet()` is
called again at the start of every trial.
"""

from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "BENCHMARK_VERBOSE"
# Modules whose UserWarnings are theirs to fix, not the user's.
THIRD_PARTY = r"(transformers|peft|torch|accelerate|deepspeed|datasets|ray|mlflow|optuna|" \
              r"bitsandbytes|sklearn|huggingface_hub|tokenizers|galore_torch|badam|pydantic)(\..*)?$"
# Loggers that print lines of no use in our output at WARNING level.
NOISY_LOGGERS = ("bitsandbytes", "transformers", "peft", "accelerate", "datasets", "torch",
                 "ray", "ray.tune", "ray.train", "ray.data", "mlflow", "optuna", "alembic")
# Ray Tune's ERROR records with a traceback for a trial that failed or a run that ended
# with failed trials: the run prints its own line for each (reason, retry, failure).
DUPLICATE_ERROR_LOGGERS = ("ray.tune.execution.tune_controller", "ray.tune.tune")
# Environment read by the libraries themselves (and inherited by Ray's workers).
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
             "HF_HUB_VERBOSITY": "error", "DATASETS_VERBOSITY": "error",
             "MLFLOW_LOGGING_LEVEL": "WARNING",
             # MLflow 3 prints two links per run it ends on a tracking server; `run` prints
             # the experiment's link once.
             "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
             "RAY_DEDUP_LOGS": "0", "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning"}


class _DropBelowError(logging.Filter):
    """On a logger that configures itself at import (DeepSpeed's resets its level and adds
    its own handler), a filter is what survives."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


_DEEPSPEED_FILTER = _DropBelowError()


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def quiet(verbose: bool | None = None) -> None:
    """Set the filters for this process and record the choice for its children.
    verbose=None: as the environment says (a Ray worker)."""
    if verbose is None:
        verbose = is_verbose()
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=THIRD_PARTY)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in DUPLICATE_ERROR_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    deepspeed = logging.getLogger("DeepSpeed")
    if _DEEPSPEED_FILTER not in deepspeed.filters:
        deepspeed.addFilter(_DEEPSPEED_FILTER)
    try:  # transformers sets its level once, from TRANSFORMERS_VERBOSITY, when first used
        import sys

        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
    except ImportError:
        pass
