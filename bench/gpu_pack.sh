#!/usr/bin/env bash
# Pack what bench/gpu_check.sh needs on a GPU machine whose image lacks it, into .gpu/ (ignored by
# git; name `.gpu` in the device tool's `carry`):
#   .gpu/wheels/  simpy, pydantic (+ pydantic-core, annotated-types, typing-inspection), gguf,
#                 as CPython 3.12 manylinux wheels (the GPU image's Python) — pip download, no deps
#   .gpu/cache/   the built-in corpora phones_mixed reads (de fr it nl code shakespeare), from this
#                 host's simfed cache, so the GPU machine never rebuilds them (it may lack the man pages)
# Usage: bench/gpu_pack.sh [PYTHON]      (PYTHON: the interpreter whose pip downloads; default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
mkdir -p .gpu/wheels .gpu/cache/corpus
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .gpu/wheels \
  simpy==4.1.2 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 gguf==0.19.0
CACHE=${SIMFED_CACHE:-$HOME/.cache/simfed}
for src in de fr it nl code shakespeare; do
  if [ -d "$CACHE/corpus/$src" ]; then cp -r "$CACHE/corpus/$src" .gpu/cache/corpus/; else echo "# no $CACHE/corpus/$src: the GPU machine builds it"; fi
done
du -sh .gpu
