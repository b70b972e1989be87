#!/usr/bin/env bash
# The checks and figures of one GPU session, prepared for a machine with an NVIDIA GPU (the
# H200 of issue 12: PyTorch, CuPy, nvcc there; nothing can be installed). It runs, in at most
# 9.5 minutes (one device call's limit is 10), everything writing into $OUT (default ./gpu_session_out):
#   1. env.txt          the GPU, driver, CUDA/CuPy/torch/llvmlite versions
#   2. pytest_gpu.log   pytest -m gpu -q (all of them, no -x), each test limited to $TJ_TEST_TIMEOUT s
#                       (bench/pytest_plugins/tj_per_test_timeout.py), the whole run to 180 s; junit XML too
#   3. models.log/json  bench/models.py --device cuda --quick (nanoGPT f32/bf16/CUDA graphs,
#                       makemore, LSTM, CNN vs torch eager and torch.compile), at most 300 s; the table and JSON are
#                       rewritten after each workload, the 12.8M f32/bf16 ones first
#   4. gpu.log          bench/gpu.py --quick (elementwise, gradients, softmax vs floors), 60 s
#   summary.txt         each step's command, exit status and seconds
# Each step has its own time limit (coreutils timeout), so a hang costs only that step.
#
#   OUT=/some/dir bash bench/gpu_session.sh            # on the GPU machine
#   bash bench/gpu_session.sh --dry-run                # anywhere: print the plan, check files
#
# PYTHON picks the interpreter (default python3); tracejit is imported from this checkout.
set -uo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu_session_out}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT:$ROOT/bench/pytest_plugins${PYTHONPATH:+:$PYTHONPATH}"
export TJ_TEST_TIMEOUT="${TJ_TEST_TIMEOUT:-90}"
# a fresh kernel cache (cold compiles are part of what is measured), outside $OUT (not sent)
if (( ! DRY )); then
    export TRACEJIT_CACHE_DIR="${TRACEJIT_CACHE_DIR:-$(mktemp -d -t tj_gpu_session_XXXXXX)}"
fi
mkdir -p "$OUT"
: > "$OUT/summary.txt"

note() { echo "$*" | tee -a "$OUT/summary.txt"; }

step() {        # step NAME SECONDS COMMAND...: run COMMAND into $OUT/NAME.log, limited
    local name=$1 limit=$2
    shift 2
    note "== $name (limit ${limit}s): $*"
    if (( DRY )); then
        return 0
    fi
    local start rc
    start=$(date +%s)
    (cd "$ROOT" && timeout --kill-after=10 "$limit" "$@") > "$OUT/$name.log" 2>&1
    rc=$?
    note "   exit $rc after $(( $(date +%s) - start ))s$( (( rc == 124 || rc == 137 )) && echo ' (time limit)')"
    tail -n 3 "$OUT/$name.log" | sed 's/^/   | /' | tee -a "$OUT/summary.txt"
}

for f in bench/models.py bench/gpu.py bench/pytest_plugins/tj_per_test_timeout.py tests/conftest.py; do
    if [[ ! -f "$ROOT/$f" ]]; then note "missing $f"; exit 2; fi
done
note "gpu_session: root $ROOT, out $OUT, python $PY, cache ${TRACEJIT_CACHE_DIR:-(fresh)}," \
     "$(date -u)$( (( DRY )) && echo ', dry run: nothing is run')"

step env 20 bash -c "nvidia-smi; nvcc --version; $PY -c '
import platform, numpy, llvmlite
print(\"python\", platform.python_version(), \"numpy\", numpy.__version__, \"llvmlite\", llvmlite.__version__)
for m in (\"cupy\", \"torch\"):
    try:
        mod = __import__(m); print(m, mod.__version__)
    except Exception as e:
        print(m, \"unavailable:\", e)
import tracejit as tj
print(\"tracejit cuda available:\", tj.cuda_available())
'"
step pytest_gpu 180 "$PY" -m pytest -m gpu -q -p no:cacheprovider -p tj_per_test_timeout \
    -o faulthandler_timeout=60 --junitxml="$OUT/pytest_gpu.xml" tests
step models 300 "$PY" bench/models.py --device cuda --quick --json "$OUT/models.json"
step gpu 60 "$PY" bench/gpu.py --quick
note "done $(date -u)"
