#!/usr/bin/env bash
# Everything the GPU path needs measured, in one run of under 8 minutes on one H100/H200
# (6 min on an H200, 2026-12-04; each part's limit is a cap, not its usual time):
#   1. pytest -m gpu (tests/trainer/test_gpu.py): bf16 against fp32, compile against eager,
#      losses read in batches, divergence, a fused group (on the GPU, against its members and
#      compiled against eager), a budget branched from a trunk against its run alone (its
#      differences printed), FSDP2 on one GPU;
#   2. benchmarks/fused.py --gpu --profile: 8 width-128 LR trials as 8 processes sharing the
#      GPU against one fused group, eager, compiled, and compiled with CUDA graphs
#      (PROXYSWEEP_COMPILE_MODE=reduce-overhead, not yet measured) (target >= 5x), and a
#      profile of the group's step;
#   3. benchmarks/trainer_throughput.py --gpu: GPT-124M, bf16, compiled (target MFU >= 45%).
# Each part has its own time limit, so one that hangs does not cost the others. Results go to
# benchmarks/results/ and, when $OUT is set, to $OUT (with the logs). Run from anywhere:
#     bash benchmarks/gpu_check.sh
# GPU_CHECK_STEPS="gpu_tests fused_gpu gpt124m" (the default) picks parts; fused_profile
# (the group's step profiled against a lone run's, syncs counted) and gpt124m_variants (the
# bare step with the loss compiled in, and at batch 64) are there to look for lost speed.
# GPU_TEST_K selects tests (pytest -k).
# The Python is .venv's when there is one, else python3; PYTHON=... overrides. Where the
# trainer's pure-Python dependencies (hydra-core, omegaconf, antlr4) are missing, a copy of
# them in .devsite/ (copied from a venv's site-packages) is put on the path.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT_DIR=${OUT:-benchmarks/results}
mkdir -p "$OUT_DIR" benchmarks/results
export PYTHONUNBUFFERED=1
if ! "$PY" -c "import hydra, omegaconf" 2>/dev/null && [ -d .devsite ]; then
    export PYTHONPATH="$PWD/.devsite${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PROXYSWEEP_CACHE=${PROXYSWEEP_CACHE:-$(mktemp -d)}

status=0
STEPS=" ${GPU_CHECK_STEPS:-gpu_tests fused_gpu gpt124m} "
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to OUT_DIR/NAME.log
    local name=$1 limit=$2
    [[ "$STEPS" == *" $name "* ]] || return 0
    shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT_DIR/$name.log"
    echo "== $name: rc=$rc in $((SECONDS - start))s"
    [ $rc -eq 0 ] || status=1
}

if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA device here: the GPU tests and benchmarks need one" >&2
    exit 1
fi

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
        --format=csv
    "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', \
torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} >"$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"

step gpu_tests 260 "$PY" -m pytest -m gpu tests/trainer/test_gpu.py -p no:cacheprovider -q \
    -rA --durations=0 ${GPU_TEST_K:+-k "$GPU_TEST_K"}
step fused_gpu 280 "$PY" benchmarks/fused.py --gpu --profile --json --members 8 --threads 16 \
    --tokens 131072
step gpt124m 200 "$PY" benchmarks/trainer_throughput.py --gpu --json --rounds 1 --steps 40
step fused_profile 120 "$PY" benchmarks/fused.py --gpu --profile-only --members 8
step gpt124m_variants 200 "$PY" benchmarks/trainer_throughput.py --gpu --variants --json \
    --rounds 1 --steps 40

for f in fused_gpu.json fused_profile.txt trainer_gpu_throughput.json trainer_gpu_variants.json; do
    [ -f "benchmarks/results/$f" ] && [ "$OUT_DIR" != benchmarks/results ] \
        && cp "benchmarks/results/$f" "$OUT_DIR/"
done
exit $status
