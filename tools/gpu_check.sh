#!/usr/bin/env bash
# The CUDA checks, prepared to run in ONE call on a GPU machine.
#
# STATUS: run on an NVIDIA H200 (Python 3.12.3, torch 2.11.0+cu130) on
# 2026-11-27, through the device tool; the README's CUDA section has what
# it printed. The first run found that the benchmark's forked workers could
# not use CUDA (fixed in nonlocal_plugin/benchmark/runner.py). The package
# imports with mmcv-lite (its mmdet/mmseg backbones register stand-ins when
# mmcv.ops is missing), so the fallback build below was not needed.
#
# That machine: Python 3.12, torch 2.11 with CUDA, pytest, no OpenMMLab
# package and no network. shared/gpu/ (or ../shared/gpu/) holds the wheels
# (see its README.md). Run from the repository root:
#
#     bash tools/gpu_check.sh                # install, test, bench
#     bash tools/gpu_check.sh install test   # only some stages
#
# Stages:
#   install  mmengine and the other pure-Python wheels (--no-deps
#            --no-index), mmcv-lite (the blocks need only mmcv.cnn), this
#            package (pip install --no-deps --no-build-isolation -e .).
#            If the package does not import with mmcv-lite, mmcv is built from the
#            shared source with its CPU ops (MMCV_WITH_OPS=1, not timed on
#            that machine yet; the time is printed). mmcv's setup.py builds
#            the CUDA ops whenever torch.cuda.is_available(), so the CPU-ops
#            build hides the GPU (CUDA_VISIBLE_DEVICES=).
#   test     python -m pytest -q -m cuda -s tests/test_cuda.py
#   bench    tools/benchmark.py --device cuda: the block rows in fp32 (with
#            the rate rows), tools/attention_crossover.py --device cuda
#            (where building the map stops paying on this GPU), then the
#            block rows under --amp fp16 and --amp bf16. A row that failed
#            fails the stage. The DNL
#            rows need mmseg (which needs mmcv.ops) and are left out when
#            it does not import; the Mask R-CNN row is always left out (it
#            needs mmcv's CUDA ops: MMCV_BUILD=cuda-ops GPU_CHECK_MODEL=1).
#
# Outputs go to $OUT when set (the device tool brings them back), else to
# /tmp/gpu_check: env.txt (versions, GPU, install log), pytest_cuda.log,
# bench_fp32.md, crossover_cuda.md, bench_fp16.md, bench_bf16.md,
# bench.log (progress).
#
# Knobs (environment): PYTHON (python3), MMCV_BUILD (auto | lite | cpu-ops
# | cuda-ops; auto = lite, else cpu-ops), BENCH_GRID (all four; names of
# nonlocal_plugin.benchmark.GRID or CxHxW), BENCH_REPEATS (3),
# TEST_TIMEOUT (360 s), BENCH_TIMEOUT (200 s per precision),
# GPU_CHECK_MODEL (0), BENCH_DEVICE (cuda; cpu only to dry-run the script
# on a machine without a GPU), DEADLINE (570 s: the device tool's 600 s
# per call, less a margin; a stage or precision that cannot start with 60 s
# left is skipped, and each timeout, the mmcv build's too, is cut to the
# time left).
#
# Exit status: 0 when every stage that ran passed, else 1. A stage that
# fails does not stop the later ones.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
OUTDIR=${OUT:-/tmp/gpu_check}
mkdir -p "$OUTDIR"
ENV_TXT=$OUTDIR/env.txt
STAGES=${*:-install test bench}
STATUS=0
T0=$(date +%s)
export PYTHONUNBUFFERED=1 PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A system Python 3.12 may refuse pip installs (PEP 668); this machine is
# thrown away after the session.
export PIP_BREAK_SYSTEM_PACKAGES=1

log() { echo "[gpu_check] $*" | tee -a "$ENV_TXT"; }
fail() { log "FAILED: $*"; STATUS=1; }
has_stage() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }
left() { echo $((${DEADLINE:-570} - ($(date +%s) - T0))); }
limit() {  # min($1, time left - 10 s), or empty when under 60 s are left
    local want=$1 rest
    rest=$(($(left) - 10))
    [ "$rest" -lt 50 ] && return 1
    [ "$want" -lt "$rest" ] && echo "$want" || echo "$rest"
}
imports() { "$PY" -c "$1" >/dev/null 2>&1; }

WHEELS=""
for dir in shared/gpu ../shared/gpu; do
    if [ -d "$dir" ]; then WHEELS=$dir; break; fi
done

pip_install() {
    log "pip install $*"
    "$PY" -m pip install -q --no-cache-dir "$@" >>"$ENV_TXT" 2>&1
}

wheel() {  # the path of one shared wheel, by file-name prefix
    local path
    for path in "$WHEELS"/"$1"-*.whl; do
        [ -f "$path" ] && echo "$path" && return 0
    done
    return 1
}

install_mmcv_source() {  # $1: cpu-ops or cuda-ops
    local force=0 start hide="" secs
    [ "$1" = cuda-ops ] && force=1
    [ "$1" = cpu-ops ] && hide=1
    start=$(date +%s)
    pip_install --no-deps --no-index "$(wheel setuptools)" || return 1
    "$PY" -m pip uninstall -y -q mmcv-lite mmcv >>"$ENV_TXT" 2>&1
    secs=$(limit 100000) || return 1
    log "building mmcv from source with ops (FORCE_CUDA=$force)"
    timeout "$secs" env ${hide:+CUDA_VISIBLE_DEVICES=} MMCV_WITH_OPS=1 \
        FORCE_CUDA="$force" MAX_JOBS="$(nproc)" "$PY" -m pip install \
        --no-deps --no-build-isolation --no-index --no-cache-dir \
        "$WHEELS/mmcv-2.1.0.tar.gz" >>"$ENV_TXT" 2>&1
    local rc=$?
    log "mmcv build: exit $rc after $(($(date +%s) - start)) s"
    return "$rc"
}

stage_install() {
    if [ -z "$WHEELS" ]; then
        fail "install: no shared/gpu or ../shared/gpu folder"
        return
    fi
    log "wheels from $WHEELS"
    local names="mmengine addict yapf termcolor platformdirs mmdet
                 mmsegmentation pycocotools shapely terminaltables ftfy
                 prettytable wcwidth" files=() name
    for name in $names; do
        [ -n "$(wheel "$name")" ] && files+=("$(wheel "$name")")
    done
    pip_install --no-deps --no-index ${files[@]+"${files[@]}"} \
        || fail "install: shared wheels"
    local mode=${MMCV_BUILD:-auto}
    if [ "$mode" = auto ] || [ "$mode" = lite ]; then
        pip_install --no-deps --no-index "$(wheel mmcv_lite)" \
            || fail "install: mmcv-lite"
    else
        install_mmcv_source "$mode" || fail "install: mmcv ($mode)"
    fi
    pip_install --no-deps --no-build-isolation -e . \
        || fail "install: nonlocal_plugin"
    if ! imports "import nonlocal_plugin"; then
        "$PY" -c "import nonlocal_plugin" 2>&1 | tail -n 3 | tee -a "$ENV_TXT"
        if [ "$mode" = auto ]; then
            log "nonlocal_plugin does not import with mmcv-lite;" \
                "building mmcv with its CPU ops"
            install_mmcv_source cpu-ops || fail "install: mmcv (cpu-ops)"
        fi
        imports "import nonlocal_plugin" \
            || fail "install: nonlocal_plugin does not import"
    fi
}

stage_test() {
    local secs
    if ! secs=$(limit "${TEST_TIMEOUT:-360}"); then
        fail "test: skipped, $(left) s left"
        return
    fi
    log "pytest -m cuda (timeout $secs s)"
    timeout "$secs" "$PY" -m pytest -q -m cuda -s \
        -p no:cacheprovider tests/test_cuda.py 2>&1 \
        | tee "$OUTDIR/pytest_cuda.log" \
        || fail "test: pytest -m cuda (see pytest_cuda.log)"
}

stage_bench() {
    local blocks="nl" model="--skip-model" precision
    local grid=${BENCH_GRID:-small n4096 res4 res3}
    if imports "import mmseg.models.decode_heads.dnl_head"; then
        blocks="nl dnl"
    else
        log "bench: mmseg's DNL does not import; DNL rows left out"
    fi
    if [ "${GPU_CHECK_MODEL:-0}" = 1 ]; then
        model=""
    fi
    for precision in fp32 fp16 bf16; do
        local extra=(--skip-rates) secs
        if ! secs=$(limit "${BENCH_TIMEOUT:-200}"); then
            fail "bench $precision: skipped, $(left) s left"
            continue
        fi
        if [ "$precision" = fp32 ]; then
            extra=()
        else
            extra+=(--amp "$precision" --skip-model)
        fi
        log "bench $precision: --grid $grid --blocks $blocks" \
            "(timeout $secs s)"
        # shellcheck disable=SC2086  # the lists split into words
        timeout "$secs" "$PY" tools/benchmark.py \
            --device "${BENCH_DEVICE:-cuda}" --grid $grid \
            --blocks $blocks \
            --repeats "${BENCH_REPEATS:-3}" --timeout 120 $model \
            ${extra[@]+"${extra[@]}"} --out "$OUTDIR/bench_$precision.md" \
            >/dev/null 2>>"$OUTDIR/bench.log" \
            || fail "bench $precision (see bench.log)"
        [ -f "$OUTDIR/bench_$precision.md" ] \
            && cat "$OUTDIR/bench_$precision.md"
        if grep -q 'failed \[' "$OUTDIR/bench_$precision.md" 2>/dev/null; then
            fail "bench $precision: some rows failed (see its notes)"
        fi
        if [ "$precision" = fp32 ] && secs=$(limit 90); then
            log "crossover: tools/attention_crossover.py (timeout $secs s)"
            timeout "$secs" "$PY" tools/attention_crossover.py \
                --device "${BENCH_DEVICE:-cuda}" \
                >"$OUTDIR/crossover_cuda.md" 2>>"$OUTDIR/bench.log" \
                || fail "crossover (see bench.log)"
            grep -v '^\[' "$OUTDIR/crossover_cuda.md"
        fi
    done
}

: >"$ENV_TXT"
log "stages: $STAGES; outputs in $OUTDIR"
{
    "$PY" --version
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, 'available', torch.cuda.is_available()); \
print(torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
        2>/dev/null
} 2>&1 | tee -a "$ENV_TXT"

for stage in install test bench; do
    if has_stage "$stage"; then
        start=$(date +%s)
        case $stage in
            install) stage_install ;;
            test) stage_test ;;
            bench) stage_bench ;;
        esac
        log "stage $stage done in $(($(date +%s) - start)) s"
    fi
done
"$PY" -m pip list 2>/dev/null \
    | grep -i -E "^(torch|mmcv|mmengine|mmdet|mmsegmentation|nonlocal)" \
    >>"$ENV_TXT"
log "exit $STATUS"
exit $STATUS
