#!/usr/bin/env bash
# Install fairseq-magic and everything it needs into .venv in the checkout.
# Safe to run again: each step is skipped when its result is already there.
#   PYTHON=python3.11     interpreter to build the environment from
#   TORCH_VERSION=2.13.0  torch to install when none is installed
#   TORCH_INDEX_URL=...   extra package index for torch (e.g. a CPU-only index)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    if "$PY" -c "import torch" 2>/dev/null; then
        echo "[install] torch is already installed for $PY: the environment will use it"
        "$PY" -m venv --system-site-packages .venv
    else
        "$PY" -m venv .venv
    fi
fi
# shellcheck disable=SC1091
. .venv/bin/activate
pipq() { python -m pip install --quiet --disable-pip-version-check "$@"; }
has() { python -c "import $1" 2>/dev/null; }

python -c "import setuptools, wheel" 2>/dev/null || pipq --upgrade setuptools wheel
if ! has torch; then
    echo "[install] torch ${TORCH_VERSION:-2.13.0}"
    pipq "torch==${TORCH_VERSION:-2.13.0}" ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
fi
if ! has fairseq; then
    echo "[install] fairseq (fairseq-fixed 0.12.3.1: fairseq 0.12.2 does not build or import on Python 3.11)"
    pipq numpy cython hydra-core==1.3.2 omegaconf==2.3.0 regex sacrebleu tqdm bitarray \
        scikit-learn packaging cffi
    pipq --no-deps --no-build-isolation fairseq-fixed==0.12.3.1
fi
has scipy && has sentencepiece && has matplotlib && has pytest && has xdist && has hypothesis && has tensorboardX \
    || pipq scipy sentencepiece matplotlib pytest pytest-xdist hypothesis tensorboardX
# the optional Hugging Face export (export --format huggingface); the tests use it
has transformers && has google.protobuf || pipq "transformers>=4.40,<5" protobuf
has fastBPE || pipq --no-build-isolation fastBPE
# jobs past one machine: rank train --launcher local|slurm, fairseq-hydra-train -m hydra/launcher=submitit_*
has submitit && has hydra_plugins.hydra_submitit_launcher || pipq submitit==1.5.4 hydra-submitit-launcher==1.2.0
# installed into this .venv (imported from outside the checkout, whose root would shadow it)
(cd / && python -c "import fairseq_magic") 2>/dev/null && [ -x .venv/bin/fairseq-magic ] \
    || pipq --no-deps --no-build-isolation -e .
python -c "import torch, fairseq, fairseq_magic; print(f'[install] ready: torch {torch.__version__}, fairseq {fairseq.__version__}, fairseq-magic {fairseq_magic.__version__}')" 2>/dev/null | tail -1
