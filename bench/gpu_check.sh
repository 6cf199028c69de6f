#!/usr/bin/env bash
# The GPU path in ONE command, within GPU_CHECK_BUDGET_S (480 s, the issue's 8 minutes; a step that would start later is skipped):
#   1. the GPU tests: tests/run/test_gpu.py, batched-vs-sequential equality on CUDA
#      (tests/learn/test_batched.py::test_batched_equals_sequential_on_cuda) and the frozen
#      weights' bf16 copies against autocast's own casts on CUDA (tests/learn/test_frozen_casts.py::..._on_cuda);
#   2. bench/local_step.py on CUDA (fp32 and bf16 autocast; expert paths auto = dense and grouped),
#      and bench/paper_step.py: a paper-scale step (64 x 128) on the SmolLM2 and GPT-2 shapes,
#      tokens/s, the fraction of the GPU's bf16 peak, and one Table 1 column's time from them;
#   3. bench/batched.py on CUDA (K = 4, 8, 16; CoMiGS-1GXS and HetLoRA);
#   4. phones_mixed on CUDA, one by one and with executor.batch_devices 8 (wall time of each);
#   5. bench/memory_need.py: a step's kept and peak memory on CUDA against simfed.learn.memory.
# Every figure goes to OUTDIR/figures.txt (one a line, `name value`), every log to OUTDIR/logs/
# and, packed, OUTDIR/logs.tgz. With --compact OUTDIR/logs/ is removed after packing (the device
# tool brings back at most 8 files).
#
# The offline SmolLM2 GGUF is often missing on a GPU machine: then the SmolLM2 architecture is
# built from its config with random weights (models/smollm2-135m-random.yaml: the same shapes
# and FLOPs) and figures.txt says so (`model smollm2-135m-random`). Python packages the image
# lacks (simpy, pydantic, ...) are installed from .gpu/wheels (bench/gpu_pack.sh makes it, with
# the corpora phones_mixed reads in .gpu/cache): carry `.gpu`.
#
# Usage: bench/gpu_check.sh OUTDIR [--cpu] [--compact]
#   --cpu: the same steps on the CPU with tiny models and tiny sizes (checks the plumbing, no GPU)
set -uo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bench/gpu_check.sh OUTDIR [--cpu] [--compact]" >&2
  exit 2
fi
OUTDIR=$1
shift
CPU=0
COMPACT=0
for arg in "$@"; do
  case $arg in
    --cpu) CPU=1 ;;
    --compact) COMPACT=1 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
mkdir -p "$OUTDIR/logs"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOGS=$OUTDIR/logs
FIG=$OUTDIR/figures.txt
: > "$FIG"
PY=${PYTHON:-python3}
START=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$REPO/.gpu/cache" ] && export SIMFED_CACHE=${SIMFED_CACHE:-$REPO/.gpu/cache}
[ -d "$REPO/shared/traces" ] && export SIMFED_TRACES=${SIMFED_TRACES:-$REPO/shared/traces}

# logs packed however the check ends (a step past its limit, an error, the caller's kill)
pack() {
  tar -czf "$OUTDIR/logs.tgz" -C "$OUTDIR" logs 2> /dev/null
  [ $COMPACT -eq 1 ] && rm -rf "$LOGS"
  echo "# figures: $FIG; logs: $OUTDIR/logs.tgz"
}
trap pack EXIT
fig() { echo "$1 $2" | tee -a "$FIG"; }
note() { echo "# $*" | tee -a "$FIG"; }
elapsed() { echo $(( $(date +%s) - START )); }
on_cpu_or_gpu() { if [ "$CPU" -eq 1 ]; then echo "$1"; else echo "$2"; fi; }  # a step's arguments
# the whole check's own limit, 8 minutes (the device tool ends a command at 600 s): a step gets at most what
# is left of it, and one that would start with under 20 s left is skipped, so that the figures
# and logs of the steps before it always come back
BUDGET=${GPU_CHECK_BUDGET_S:-480}
# step NAME TIMEOUT_S COMMAND...: run with a time limit, log to logs/NAME.log, record its status
step() {
  local name=$1 limit=$2
  shift 2
  local t0 rc left
  left=$(( BUDGET - $(elapsed) - 5 ))
  if [ "$left" -lt 20 ]; then
    note "$name skipped: the check's ${BUDGET}s budget is spent"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  fig "${name}_rc" "$rc"
  fig "${name}_wall_s" "$("$PY" -c "import time; print(round(time.time() - $t0, 2))")"
  [ $rc -eq 124 ] && note "$name ran past its ${limit}s limit"
  return 0
}

# --- the packages the image lacks -------------------------------------------------------------
MISSING=$("$PY" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("simpy", "pydantic", "yaml", "safetensors", "transformers", "pandas", "rich")
               if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$MISSING" ]; then
  note "missing python packages: $MISSING"
  if ls "$REPO"/.gpu/wheels/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/simfed-site \
      "$REPO"/.gpu/wheels/*.whl > "$LOGS/pip.log" 2>&1 || note "wheel install failed (logs/pip.log)"
    export PYTHONPATH="$PYTHONPATH:/tmp/simfed-site"
  else
    note "no .gpu/wheels to install them from (run bench/gpu_pack.sh and carry .gpu)"
  fi
fi
{ date -u; uname -a; nvidia-smi 2>&1 | head -20
  "$PY" -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"; } > "$LOGS/env.log" 2>&1

if [ $CPU -eq 1 ]; then
  DEVICE=cpu; MODEL=tiny-llama; KS="2"; ROUNDS=1; SCENARIO=scenarios/tiny_smoke.yaml; STEPS=2; BATCH=2
  note "--cpu: the plumbing on the CPU with tiny models (no figure here is a GPU measurement)"
else
  DEVICE=cuda; KS="4 8 16"; ROUNDS=3; SCENARIO=scenarios/phones_mixed.yaml; STEPS=10; BATCH=8
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    note "no CUDA device here: run with --cpu for the plumbing"
    exit 1
  fi
  if "$PY" -c "from simfed.learn.base_model import load_base_model; from simfed.learn.model_card import load_card; load_base_model(load_card('smollm2-135m'))" > "$LOGS/model.log" 2>&1; then
    MODEL=smollm2-135m
  else
    MODEL=smollm2-135m-random
    note "the offline smollm2-135m cannot load here (logs/model.log): SmolLM2's architecture from its config, random weights (same shapes and FLOPs); perplexities below mean nothing"
  fi
fi
fig device "$DEVICE"
fig model "$MODEL"

# --- 1. the GPU tests (skipped, not failed, on the CPU) ---------------------------------------
step tests 200 "$PY" -m pytest -q -p no:cacheprovider tests/run/test_gpu.py \
  "tests/learn/test_batched.py::test_batched_equals_sequential_on_cuda" \
  tests/learn/test_frozen_casts.py::test_a_bf16_step_with_the_copies_is_autocast_bit_for_bit_on_cuda -rs
fig tests_summary "\"$(tail -n 1 "$LOGS/tests.log")\""

# --- 2. one local step: CoMiGS vs peft ---------------------------------------------------------
# on a GPU, expert_compute auto runs dense (no host sync, simfed/learn/lora.py grouped_for):
# grouped is timed beside it, to see what the sync-free path costs there
COMPUTE="auto"
[ $CPU -eq 1 ] || COMPUTE="auto grouped"
for precision in float32 bfloat16; do
  [ $CPU -eq 1 ] && [ $precision = bfloat16 ] && continue
  # shellcheck disable=SC2086
  step "local_step_$precision" 120 "$PY" bench/local_step.py --device "$DEVICE" --model "$MODEL" \
    --precision $precision --steps $STEPS --warmup 2 --experts 2 4 --compute $COMPUTE
  grep -v '^#' "$LOGS/local_step_$precision.log" | grep -E '^[A-Za-z0-9_]+ [-0-9.e+]+$' | sed "s/^/local_step_${precision}_/" >> "$FIG"
done

# --- 2b. a paper-scale step (64 x 128): tokens/s, fraction of bf16 peak, one Table 1 column -----
PAPER_ARGS=$(on_cpu_or_gpu "--models tiny-llama gpt2-124m-random --batch 2 --seq-len 16 --steps 1 --warmup 1" \
  "--models $MODEL gpt2-124m-random --steps 5 --warmup 2")
# shellcheck disable=SC2086
step paper_step 150 "$PY" bench/paper_step.py --device "$DEVICE" $PAPER_ARGS
grep -v '^#' "$LOGS/paper_step.log" | grep -E '^[A-Za-z0-9_.-]+ [-0-9.e+]+$' | sed 's/^/paper_step_/' >> "$FIG"
grep -E '^# .*(unavailable|Table 1)' "$LOGS/paper_step.log" >> "$FIG"

# --- 3. batched vs one by one, a round of K devices ---------------------------------------------
# shellcheck disable=SC2086
step batched 240 "$PY" bench/batched.py --device "$DEVICE" --model "$MODEL" --k $KS --rounds $ROUNDS
grep -v '^#' "$LOGS/batched.log" | grep -E '^[A-Za-z0-9_.-]+ [-0-9.e+]+$' | sed 's/^/batched_/' >> "$FIG"
grep '^# .*unavailable' "$LOGS/batched.log" >> "$FIG"

# --- 4. phones_mixed end to end -----------------------------------------------------------------
for k in 1 $BATCH; do
  step "scenario_batch$k" 150 "$PY" -m simfed run "$SCENARIO" --out "$LOGS/runs_batch$k" \
    --set training.device="$DEVICE" --set model="$MODEL" --set executor.batch_devices=$k
done
"$PY" - "$LOGS" "$BATCH" >> "$FIG" 2> "$LOGS/compare.log" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

logs, batch = Path(sys.argv[1]), sys.argv[2]
frames = {}
for k in ("1", batch):
    found = sorted((logs / f"runs_batch{k}").glob("*/*/metrics.csv"))
    if found:
        frames[k] = pd.read_csv(found[-1])
if len(frames) == 2:
    a, b = frames["1"], frames[batch]
    last = a["round"].max()
    for name, frame in (("batch1", a), (f"batch{batch}", b)):
        for method, rows in frame[frame["round"] == last].groupby("method"):
            print(f"scenario_{name}_{method}_final_mean_ppl {rows['ppl'].mean():.6g}")
    if len(a) == len(b):
        rel = ((a["ppl"] - b["ppl"]).abs() / a["ppl"].abs()).max()
        print(f"scenario_batched_vs_sequential_max_rel_ppl {rel:.3g}")
else:
    print("# phones_mixed: a run did not finish (logs/scenario_batch*.log)")
EOF

# --- 5. what a step holds in memory against simfed.learn.memory's estimate (fp32; last: least needed)
MEM_ARGS=$(on_cpu_or_gpu "--models tiny-llama --shapes 2x16 --experts 1 2" \
  "--models $MODEL gpt2-124m-random --shapes 4x128 8x128 --experts 1 2 4")
# shellcheck disable=SC2086
step memory_need 120 "$PY" bench/memory_need.py --device "$DEVICE" $MEM_ARGS
grep -v '^#' "$LOGS/memory_need.log" | grep -E 'kept_gb' | sed 's/^/# memory_need /' >> "$FIG"

fig total_wall_s "$(elapsed)"
