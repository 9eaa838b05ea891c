#!/usr/bin/env bash
# GPU check of the Triton backend, for a CUDA machine with no network. Installs nothing: if
# graphc is not importable, it is imported from this checkout (see below).
#
#   benchmarks/gpu_check.sh [OUTDIR]      # OUTDIR: default $OUT, else ./gpu_check_results
#
# 1. the `gpu` test tier: tests/backends/triton -m gpu (op matrix on the device, AOT packages
#    launched from cubins, CUDA graphs, tf32 opt-in)
# 2. own timings (benchmarks/triton_timing.py, labelled as such): copy bandwidth anchor, fused
#    elementwise chain, softmax, batch-norm training forward, MLP training step and matmul
#    against torch eager and torch.compile (graphc fused, fused as a CUDA graph, and unfused),
#    every op-matrix case launch-by-launch and as one CUDA graph
# 3. the row-reduction launch-configuration sweep and the host overhead per launch
#    (benchmarks/triton_reduce_sweep.py)
# 4. `graphc bench --target triton --quick` when that command exists
# Writes into OUTDIR: results.md (environment, test summary, targets), gpu-tests.log,
# triton-timing.json, triton-timing.log, reduce-sweep.json, reduce-sweep.log, bench.log (and
# bench.json): 8 files. Sized for < 8 minutes on one H100 (about 5 on an H200); each step has
# its own time limit so a hang cannot eat the rest.
set -u
cd "$(dirname "$0")/.." || exit 2
OUTDIR="${1:-${OUT:-gpu_check_results}}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python3}"
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
T0=$(date +%s)
R="$OUTDIR/results.md"

{
  echo "# graphc Triton backend: GPU check"
  echo
  echo '```'
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  $PY -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch',
torch.__version__, '| triton', triton.__version__, '| cuda available', torch.cuda.is_available())"
  git rev-parse --short HEAD 2>/dev/null
  echo '```'
} > "$R" 2>&1

PYTEST_MODE=()
if ! $PY -c "import graphc.backends.triton" > /dev/null 2>&1; then
  echo "graphc not installed: offline editable install of this checkout" >> "$R"
  if ! $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . >> "$R" 2>&1; then
    # No pip or no setuptools: lay out the `graphc` namespace the way pyproject maps it
    # (graphc/, ir/ and backends/ as graphc.ir and graphc.backends) as links in a temporary
    # folder that comes first on the path (the checkout's own graphc/ must not shadow it).
    NS="$(mktemp -d)/graphc"
    mkdir -p "$NS"
    for f in "$PWD"/graphc/*; do ln -s "$f" "$NS/"; done
    ln -s "$PWD/ir" "$NS/ir"
    ln -s "$PWD/backends" "$NS/backends"
    export PYTHONSAFEPATH=1 PYTHONPATH="$(dirname "$NS"):$PWD${PYTHONPATH:+:$PYTHONPATH}"
    PYTEST_MODE=(--import-mode=append)
    echo "install failed: graphc imported from this checkout through $NS" >> "$R"
  fi
fi
XDIST=()
$PY -c "import xdist" > /dev/null 2>&1 && XDIST=(-n 8)

step() {  # step NAME SECONDS LOG CMD...: run with a time limit, record status and duration
  local name=$1 limit=$2 log=$3
  shift 3
  local t=$(date +%s)
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  local note=""
  [ $rc -eq 124 ] && note=" (timed out after ${limit}s)"
  echo "- $name: exit $rc$note, $(( $(date +%s) - t )) s" >> "$R"
  return $rc
}

echo -e "\n## Steps\n" >> "$R"
step "gpu test tier (pytest -m gpu tests/backends/triton)" 240 "$OUTDIR/gpu-tests.log" \
  $PY -m pytest tests/backends/triton -m gpu -p no:cacheprovider -p no:benchmark -rfEs "${XDIST[@]}" "${PYTEST_MODE[@]}"
step "own timings (benchmarks/triton_timing.py)" 240 "$OUTDIR/triton-timing.log" \
  $PY benchmarks/triton_timing.py --out "$OUTDIR/triton-timing.json"
step "reduction sweep and launch overhead (benchmarks/triton_reduce_sweep.py)" 150 \
  "$OUTDIR/reduce-sweep.log" $PY benchmarks/triton_reduce_sweep.py --out "$OUTDIR/reduce-sweep.json"
if $PY -m graphc.cli bench --help > /dev/null 2>&1; then
  step "graphc bench --target triton --quick" 100 "$OUTDIR/bench.log" \
    $PY -m graphc.cli bench --target triton --quick --json "$OUTDIR/bench.json" --no-progress
else
  echo "- graphc bench: not available in this checkout (own timings above stand in)" >> "$R"
fi

{
  echo -e "\n## gpu tier\n"
  echo '```'
  grep -E "passed|failed|error|skipped" "$OUTDIR/gpu-tests.log" | tail -n 5
  grep -E "^(FAILED|ERROR)" "$OUTDIR/gpu-tests.log" | head -n 40
  echo '```'
  echo -e "\n## Targets (own timings; see triton-timing.json)\n"
  echo '```'
  grep -E "^target" "$OUTDIR/triton-timing.log"
  echo '```'
  echo -e "\ntotal $(( $(date +%s) - T0 )) s"
} >> "$R" 2>&1
cat "$R"
