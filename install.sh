#!/usr/bin/env bash
# Creates .venv (or $VENV) and installs flow2gan with its training, evaluation and test dependencies.
# torch is installed first and pinned to 2.13.0 so pip takes the local CPU build instead of a multi-GB
# CUDA download; on a GPU machine install the torch build you want first and set TORCH_SPEC="".
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC-torch==2.13.0}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
[ -z "$TORCH_SPEC" ] || $PIP install -q "$TORCH_SPEC"
$PIP install -q -e ".[dev]"
# CREPE pitch metrics: torchcrepe declares torchaudio, which flow2gan does not use (flow2gan.eval.crepe).
$PIP install -q --no-deps torchcrepe
echo "installed flow2gan into $VENV"
