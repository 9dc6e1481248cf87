#!/usr/bin/env bash
# The whole GPU check of issue 10 in one run, on a machine with an NVIDIA GPU:
#
#     bash scripts/gpu_check.sh [wheel_dir]        (default wheel_dir: .whl if it exists)
#
# 1. setup:     installs the wheels of wheel_dir for the packages the GPU image lacks
#               (pip --no-index --find-links: no network), then `pip install -e . --no-deps`;
#               prints the GPU, CuPy, NCCL and torch versions.
# 2. cuda:      pytest -m cuda tests/cuda (kernels vs their composites, every registry op's
#               gradient vs the CPU, a training step, checkpoints across devices, device RNG,
#               pinned uploads, NCCL with world size 1).
# 3. bench:     python -m benchmarks.gpu (Ember vs PyTorch CUDA eager in one process, with
#               Ember's top kernels).
# 4. suites:    EMBER_TEST_DEVICE=cuda pytest tests/ops tests/nn: every op and layer test with
#               its inputs on the GPU against torch on the CPU, with whatever time is left.
#               Tests of CPU-only paths skip there (tests/oracle.py cpu_only); the same run on
#               the fake CuPy (EMBER_TEST_DEVICE=fake-cuda) is all green, so a failure here
#               is a GPU bug.
# Each stage has its own timeout and the whole run stays under 8 minutes. With $OUT set, the
# logs, the benchmark JSON and summary.md are written there.
#
# Preparing wheel_dir (on a machine with the internet, e.g. the dev box; `.whl/` is gitignored,
# so pass it to a device run with carry=[".whl"]): the GPU image has numpy, cupy-cuda13x,
# mpi4py and torch, but not Ember's other dependencies. Match the image's Python version:
#
#     pip download -d .whl --only-binary=:all: --python-version 3.12 \
#         --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
#         hydra-core omegaconf antlr4-python3-runtime tensorboardX protobuf ml_dtypes \
#         safetensors tqdm PyYAML pytest pytest-xdist hypothesis
#
# (antlr4-python3-runtime 4.9.3, which omegaconf pins, ships only an sdist: build its wheel
# once with `pip wheel -w .whl antlr4-python3-runtime==4.9.3`.)

set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-470}          # the whole run, seconds (< 8 minutes)
WHEELS=${1:-}
if [ -z "$WHEELS" ] && [ -d .whl ]; then WHEELS=.whl; fi
LOGDIR=${OUT:-$(mktemp -d)}
mkdir -p "$LOGDIR"
SUMMARY="$LOGDIR/summary.md"
PY=${PYTHON:-python}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}  # Ember importable even if pip -e fails

echo "# Ember GPU check" > "$SUMMARY"
echo "" >> "$SUMMARY"
echo "| stage | status | seconds | log |" >> "$SUMMARY"
echo "| --- | --- | --- | --- |" >> "$SUMMARY"

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# stage NAME LIMIT_S COMMAND...: runs with min(LIMIT_S, time left), logs, and records the row
stage() {
    local name=$1 limit=$2
    shift 2
    local remaining
    remaining=$(left)
    if [ "$remaining" -lt 20 ]; then
        echo "| $name | skipped (out of time) | 0 | - |" >> "$SUMMARY"
        return 124
    fi
    [ "$limit" -gt "$remaining" ] && limit=$remaining
    local log="$LOGDIR/$name.log" t0 rc
    t0=$(date +%s)
    echo "=== $name (limit ${limit}s) ==="
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    rc=$?
    tail -n 40 "$log"
    local status="ok"
    [ $rc -eq 124 ] && status="TIMEOUT after ${limit}s"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="FAILED (rc $rc)"
    echo "| $name | $status | $(( $(date +%s) - t0 )) | $(basename "$log") |" >> "$SUMMARY"
    return $rc
}

setup() {
    if [ -n "$WHEELS" ]; then
        # only what is missing: the image's numpy, cupy, mpi4py and torch stay as they are
        local need=()
        for pair in hydra:hydra-core omegaconf:omegaconf antlr4:antlr4-python3-runtime \
            tensorboardX:tensorboardX ml_dtypes:ml_dtypes safetensors:safetensors tqdm:tqdm \
            yaml:PyYAML pytest:pytest xdist:pytest-xdist hypothesis:hypothesis; do
            "$PY" -c "import ${pair%%:*}" 2>/dev/null || need+=("${pair#*:}")
        done
        if [ ${#need[@]} -gt 0 ]; then
            echo "installing from $WHEELS: ${need[*]}"
            "$PY" -m pip install --no-index --find-links "$WHEELS" "${need[@]}" || return 1
        fi
    fi
    # no network: no build isolation (setuptools from the image); PYTHONPATH covers a failure
    "$PY" -m pip install -e . --no-deps --no-build-isolation -q || echo "pip -e failed: PYTHONPATH"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    "$PY" - <<'EOF'
import cupy, numpy, torch
import ember
from cupy.cuda import nccl
print("cupy", cupy.__version__, "cuda runtime", cupy.cuda.runtime.runtimeGetVersion())
print("nccl", nccl.get_version(), "numpy", numpy.__version__, "torch", torch.__version__)
print("devices", cupy.cuda.runtime.getDeviceCount(), "ember sees cuda:", ember.cuda_is_available())
try:
    cupy.asarray(numpy.zeros(2, dtype=ember.bfloat16.np))
    print("CuPy bfloat16 arrays: yes")
except Exception as exc:
    print("CuPy bfloat16 arrays: NO (", exc, ") - bf16 autocast on the GPU needs CuPy >= 14")
EOF
}

XDIST=""
export -f setup
export PY WHEELS
stage setup 90 bash -c setup || { echo "setup failed: see $LOGDIR/setup.log"; cat "$SUMMARY"; exit 1; }
"$PY" -c "import xdist" 2>/dev/null && XDIST="-n 4"

stage cuda 180 "$PY" -m pytest tests/cuda -q -p no:cacheprovider $XDIST -o addopts="" \
    -m cuda --junitxml="$LOGDIR/cuda_junit.xml"
CUDA_RC=$?

stage bench 170 "$PY" -m benchmarks.gpu --quick --profile --json "$LOGDIR/gpu_bench.json"
BENCH_RC=$?

stage suites 100 env EMBER_TEST_DEVICE=cuda "$PY" -m pytest tests/ops tests/nn -q \
    -p no:cacheprovider $XDIST -o addopts="" -m "not slow and not cuda" || true

{
    echo ""
    echo "total: $(( $(date +%s) - START )) s of a ${BUDGET} s budget"
    echo ""
    echo "## pytest -m cuda (last lines)"
    echo '```'
    tail -n 25 "$LOGDIR/cuda.log" 2>/dev/null
    echo '```'
    echo "## op and nn suites on the GPU (last lines)"
    echo '```'
    grep -E "^(FAILED|ERROR)" "$LOGDIR/suites.log" 2>/dev/null | head -n 60
    tail -n 3 "$LOGDIR/suites.log" 2>/dev/null
    echo '```'
    echo "## benchmarks"
    echo '```'
    sed -n '/Ember vs PyTorch CUDA eager/,$p' "$LOGDIR/bench.log" 2>/dev/null | head -n 60
    echo '```'
} >> "$SUMMARY"
cat "$SUMMARY"
[ $CUDA_RC -eq 0 ] && [ $BENCH_RC -eq 0 ]
