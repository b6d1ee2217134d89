#!/usr/bin/env bash
# Prepare the one GPU run of benchmarks/gpu_check.py. Run HERE, on the development machine (it needs pip's
# package index), from the checkout the device tool sends. It writes two git-ignored folders that the run
# carries: .whl/ (wheels of the packages the GPU image lacks, at the versions of this venv, for its
# Python 3.12) and .gpu_data/ (the LJ Speech subset, which lives beside the repo and does not travel by
# itself); both are added to the repository's info/exclude. pesq publishes no wheel (source only, and
# building it needs Cython), so the GPU run's learning metrics go without PESQ. See benchmarks/README.md.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
python=${PYTHON:-.venv/bin/python}
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
for folder in /.whl/ /.gpu_data/; do
  grep -qxF "$folder" "$exclude" 2>/dev/null || echo "$folder" >>"$exclude"
done
rm -rf .whl .gpu_data
mkdir -p .whl .gpu_data
# Missing on the GPU image (KINDS.md of the device tool): audio I/O, lhotse and the evaluation metrics.
pins=$("$python" - <<'PY'
import importlib.metadata as m
names = "soundfile cffi pycparser soxr lhotse cytoolz intervaltree audioread pystoi librosa decorator pooch platformdirs resampy"
print(" ".join(f"{n}=={m.version(n)}" for n in names.split()))
PY
)
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
# shellcheck disable=SC2086
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl $pins
cp -r ../shared/data/ljspeech-32 .gpu_data/
du -sh .whl .gpu_data
