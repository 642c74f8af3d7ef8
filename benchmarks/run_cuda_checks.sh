#!/usr/bin/env bash
# Build the CUDA kernels, run the GPU tests and the GPU benchmark; write everything to a folder.
#
#   benchmarks/run_cuda_checks.sh prepare          # on a machine WITH internet: wheels into .whl/
#   benchmarks/run_cuda_checks.sh all              # on the GPU machine: setup build tests bench
#   benchmarks/run_cuda_checks.sh tests            # only the GPU tests
#   benchmarks/run_cuda_checks.sh sanitize         # compute-sanitizer memcheck/racecheck/synccheck
#   benchmarks/run_cuda_checks.sh bench 0.1b,1.5b  # only the benchmark, chosen sizes
#
# Results go to $RWKV_TUI_RESULTS (default benchmarks/results/): build log, test log, the
# benchmark table (markdown) and raw numbers (jsonl). Each step appends to the same files, so
# steps can run as separate commands (e.g. under a 10-minute limit per command:
# `setup build tests`, then `bench 0.1b,1.5b`, then `bench 7.2b`).
# Python: $PYTHON, else python3. The GPU machine has no package index: `prepare` downloads
# the two pure-Python packages the engine needs beyond that image (platformdirs, and rwkv as
# the test oracle) so that `setup` can install them offline from .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
RESULTS="${RWKV_TUI_RESULTS:-benchmarks/results}"
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

log() { echo "== $(date +%H:%M:%S) $*" | tee -a "$RESULTS/cuda-run.log"; }

prepare() {
    "$PY" -m pip download --no-deps --only-binary=:all: -d .whl "rwkv==0.8.32" platformdirs
}

setup() {
    log "setup"
    if ! "$PY" -c "import platformdirs, rwkv" 2>/dev/null; then
        if ls .whl/*.whl >/dev/null 2>&1; then
            "$PY" -m pip install --no-index --no-deps .whl/*.whl 2>&1 | tail -2 | tee -a "$RESULTS/cuda-run.log"
        else
            log "platformdirs or rwkv missing and no .whl/ to install from (run 'prepare' where pip works)"
        fi
    fi
    { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
      "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"
      nvcc --version | tail -1 || true; } 2>&1 | tee -a "$RESULTS/cuda-run.log"
}

build() {
    log "build (first build takes a minute or two; cached afterwards)"
    RWKV_TUI_CUDA_VERBOSE_BUILD=1 "$PY" - <<'EOF' 2>&1 | tee "$RESULTS/cuda-build.log" | tail -3
import time
from engine.backends.cuda_build import load_extension
start = time.perf_counter()
module = load_extension()
print(f"extension {module.__name__} ready in {time.perf_counter() - start:.1f} s")
EOF
}

tests() {
    log "GPU tests"
    "$PY" -m pytest tests/engine/test_cuda_gpu.py tests/engine/test_cuda_emulated.py \
        tests/engine/test_cuda_fallback.py -rs -q -p no:cacheprovider 2>&1 | tee "$RESULTS/cuda-tests.log" | tail -25
}

sanitize() {
    # A tiny model's prefill and decode (eager and graph) under each compute-sanitizer tool;
    # torch's caching allocator is off so that out-of-bounds accesses hit unallocated memory.
    for tool in memcheck racecheck synccheck; do
        log "compute-sanitizer $tool"
        PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 9 "$PY" - <<'EOF' \
            2>&1 | tee "$RESULTS/cuda-sanitize-$tool.log" | tail -4
import torch
from engine.backends.cuda import CudaBackend
from engine.checkpoint import infer_config
from engine.state import State
from engine.synthetic import random_state_dict
sd = random_state_dict(2, 128, 300, seed=1, ranks=(24, 20, 40, 32))
config = infer_config(sd)
for dtype in (torch.float16, torch.bfloat16, torch.float32):
    for graph in (False, True):
        backend = CudaBackend(sd, config, dtype, "cuda", use_graph=graph)
        logits, state = backend.forward(list(range(1, 40)), State.zeros(config))
        for _ in range(3):
            logits, state = backend.forward([int(logits.argmax())], state)
        torch.cuda.synchronize()
print("sanitize run finished")
EOF
    done
}

bench() {
    local sizes="${1:-0.1b,1.5b,7.2b}"
    log "benchmark $sizes"
    "$PY" benchmarks/bench_cuda.py --sizes "$sizes" --jsonl "$RESULTS/cuda-bench.jsonl" \
        --output "$RESULTS/cuda-bench-${sizes//,/-}.md" 2>&1 | tee -a "$RESULTS/cuda-bench.log" | tail -20
}

[ $# -eq 0 ] && set -- all
while [ $# -gt 0 ]; do
    step="$1"; shift
    case "$step" in
        prepare|setup|build|tests|sanitize) "$step" ;;
        bench|all)
            sizes=""
            if [ $# -gt 0 ] && [[ "$1" == *b* ]] && [[ "$1" != build ]]; then sizes="$1"; shift; fi
            if [ "$step" = all ]; then setup; build; tests; sanitize; fi
            bench "$sizes" ;;
        *) echo "unknown step '$step' (prepare, setup, build, tests, sanitize, bench [SIZES], all [SIZES])" >&2; exit 2 ;;
    esac
done
