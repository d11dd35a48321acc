#!/usr/bin/env bash
# The GPU checks and benchmarks of the day, in one device call; numbers land in $OUT/gpu_check.tgz.
#
# Here, once (the wheels the GPU image lacks; .whl/ is git-ignored):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0 mistral-common==1.13.1 tensorboardX==2.6.5
# Then, with the device tool (device time is 15 min a session, the machine's start included):
#   run(command="BUDGET_S=555 bash bench/gpu_check.sh open", carry=[".whl"], timeout_s=590), then at
#   once (the machine stays warm 30 s), run(command="BUDGET_S=<budget left - 60> bash
#   bench/gpu_check.sh train_small", ...) resumes the training run with the same numerics; give_back.
#   (On a fresh machine the numerics "open" chose are gone: pass them, BEST="<flags of status.txt's
#   'numerics' line>"; the run itself starts again from step 0.)
#   part "open" (the open issue's figures): a tiny checkpoint written on the GPU unless tests/data/gpu_checkpoint
#                                 holds one (tests/test_inspect.py reads it), train_mfu at 8 seeds as configured (TF32) and
#                                 with bf16 matmuls, bf16 activations (with and without cuDNN's flash attention) and remat "dots" (fp32 and named TF32 were timed on
#                                 2026-11-27: 88.5 and 43.7 ms, BENCHMARKS.md), then with the fastest ($BEST): a kernel
#                                 profile, the PyTorch reference, N = 1/8/64 seeds (an N that runs out of memory is retried
#                                 with remat), and train_small to the end;
#   part "all" (~6 min): GPU facts, the tiny GPU checkpoint, sampler, training MFU/seeds/PyTorch, small-model patching,
#                                 Mistral-7B forward (random bf16 weights) against PyTorch;
#   part "train_small" (TRAIN_S seconds, default 300): configs/small.py (8 seeds; RUN_SEEDS=64 for 64) trained
#                                 until SIGTERM (it saves first), evaluated every 500 steps; resumes; then
#                                 launch/analyze.py on its newest checkpoint (ANALYZE_S seconds kept for it, default 150);
#   part "mistral_patching" (~8 min): the 7B head_z sweep against the per-head loop, and the whole study.
# BUDGET_S cuts each step's limit so the call ends, archive written, within that many seconds.
# Rehearse on the CPU with: GPU_CHECK_SMOKE=1 OUT=/tmp/gpu_out bash bench/gpu_check.sh open
# (tests/test_gpu_check.py does, marked slow). Read the archive: tar xzf gpu_check.tgz &&
# python bench/gpu_summary.py gpu_check (each figure against its goal).
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-all}
OUT=${OUT:-/tmp/gpu_check_out}
R=$OUT/gpu_check
mkdir -p "$R"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
smoke=${GPU_CHECK_SMOKE:-0}   # 1: tiny sizes, to rehearse the script on a CPU
MFU_VARIANTS=${MFU_VARIANTS:-bf16mm,bf16,bf16fused,dots}  # train_mfu's numerics besides the config's (bench/train_mfu.py VARIANTS)

BEST_FILE=${BEST_FILE:-/tmp/gpu_check_best_flags}  # the numerics "open" chose, kept on the machine
BUDGET_S=${BUDGET_S:-0}  # > 0: the whole call ends within this many seconds (the archive is still written)
GRACE=5  # seconds between the SIGTERM at the limit and a SIGKILL (training saves in between)
STEP_RC=none  # the last step's exit status, or "skipped"
step() {  # step NAME SECONDS CMD...: run with a time limit (cut to the budget left), log, record the exit status
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  if [ "$BUDGET_S" -gt 0 ]; then
    local left=$((BUDGET_S - SECONDS - GRACE - 20 - ${RESERVE_S:-0}))  # 20 s for the archive and the transfer back; RESERVE_S for later steps
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt "${MIN_S:-15}" ]; then STEP_RC=skipped; echo "$name skipped: budget spent" | tee -a "$R/status.txt"; return; fi
  fi
  timeout -k "$GRACE" "$limit" "$@" >"$R/$name.log" 2>&1
  STEP_RC=$?
  echo "$name rc=$STEP_RC ${limit}s-limit took=$((SECONDS - start))s" | tee -a "$R/status.txt"
}

{ date -u; nvidia-smi 2>&1 | head -15; python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
  python3 -c "import matplotlib, ml_collections, tensorboardX, mistral_common; print('matplotlib, ml_collections, tensorboardX, mistral_common: importable')"; } >"$R/machine.txt" 2>&1

if [ "$smoke" = 1 ]; then
  S_BATCH=1024,16384; SEEDS=1,8; MISTRAL=small; PAIRS=2; TRAIN_CFG="--config.batch_size=16 --config.model.d_model=48 --config.model.d_mlp=192"; PATCH="--pairs 64 --positions 8 --chunk-size 3"
  RUN_SEEDS=8; RUN_CFG="--config.num_steps=40 --config.steps_per_call=20 --config.eval_every=20 --config.checkpoint_every=20 --config.eval_size=64"
  MFU="--config.num_seeds=8 --steps=3 --repeats=1"; PROFILE="--steps=3 --repeats=1"; TORCH="--seeds=2 --steps=5"
  ANALYZE_S=${ANALYZE_S:-120}; ANALYZE_CFG="--n_accuracy=64 --n_attention=32 --n_patch=16 --n_probe_train=64 --n_probe_test=64 --n_routing=32 --probe_steps=5 --chunk=64"
else
  S_BATCH=1048576,8388608,33554432; SEEDS=1,8,64; MISTRAL=7b; PAIRS=64; TRAIN_CFG=""; PATCH="--pairs 1000 --positions 38 --chunk-size 9"  # 9 cells x 1000 pairs a chunk: ~7 GB
  # The config's 8 seeds (RUN_SEEDS=64 where a lease allows hours): at 43 ms a step a call of a few
  # minutes reaches thousands of steps, where 64 seeds (0.36 s a step) reach a few hundred;
  # gpu_summary.py projects the 64-seed wall time from train_seeds' step times. Chunks of 50
  # steps (a SIGTERM waits for the one in flight), evaluations every 500 (a stop does not evaluate).
  RUN_SEEDS=${RUN_SEEDS:-8}; RUN_CFG="--config.eval_every=500 --config.checkpoint_every=1000 --config.steps_per_call=50"
  MFU="--steps=20 --repeats=2"  # 8 seeds (the config's): 5 numerics x ~40 s (compilation, timing); N = 64 is train_seeds' job
  PROFILE=""; TORCH="--seeds=4 --steps=20"
  ANALYZE_S=${ANALYZE_S:-150}; ANALYZE_CFG=""  # the paper's sizes; 8 seeds took 336 s on 2 CPU cores (tiny_cpu)
fi

small_workdir() {  # The workdir stays outside $OUT (its checkpoints are large); rerunning on the same
  # machine resumes it. One workdir per numerics ($BEST): a run of other numerics is refused, not resumed.
  echo "${TRAIN_WORKDIR:-/tmp/small_run_$(echo "${BEST:-}" | md5sum | cut -c1-8)}"
}

train_small() {  # stopped by its time limit (rc=124 expected): SIGTERM, the run saves, then exits.
  # The wall time to 100% is read from metrics.jsonl. $1: seconds of the budget to leave for later steps.
  local W; W=$(small_workdir)
  # A compilation cache for this run only (a resumed run skips ~30 s of compiling; the
  # benchmarks must not hit it, as they time compilation). At least 60 s, or it saves nothing.
  MIN_S=60 GRACE=60 RESERVE_S=${1:-0} JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache_train step train_small "${TRAIN_S:-300}" python3 launch/train.py --config=configs/small.py --config.num_seeds=$RUN_SEEDS \
    --config.progress=False $RUN_CFG $TRAIN_CFG ${BEST:-} --workdir="$W"
  if [ "$STEP_RC" = 0 ] || [ "$STEP_RC" = 124 ]; then  # finished, or stopped at the limit (it saved)
    cp "$W/metrics.jsonl" "$W/run.json" "$R/"
    cp "$W/curves.png" "$R/" 2>/dev/null || true  # drawn where matplotlib is installed; else draw it here from the two files
  else  # skipped or failed: no older run's log may pass for this one's
    rm -f "$R/metrics.jsonl" "$R/run.json" "$R/curves.png"
  fi
}

analyze_small() {  # the paper's analyses (launch/analyze.py) of train_small's newest checkpoint, every seed
  local W; W=$(small_workdir)
  [ -d "$W/checkpoints" ] || { echo "analyze_small skipped: no checkpoint in $W" | tee -a "$R/status.txt"; return; }
  step analyze_small "$ANALYZE_S" python3 launch/analyze.py --workdir="$W" --out="$R/analysis" --noprogress $ANALYZE_CFG
}

gpu_checkpoint() {  # a tiny run written on the GPU, for tests/test_inspect.py: copy $R/gpu_checkpoint to tests/data/
  local W=$R/gpu_checkpoint
  step gpu_checkpoint 90 python3 launch/train.py --config=configs/tiny_cpu.py --workdir="$W" --config.num_seeds=2 --config.num_devices=1 --config.num_steps=20 \
    --config.batch_size=16 --config.steps_per_call=10 --config.checkpoint_every=10 --config.eval_every=10 --config.eval_size=32 \
    --config.model.n_layers=1 --config.model.d_model=16 --config.model.d_mlp=32 --config.optim.decay_steps=20 --config.progress=False
  # What the GPU machine reads back from it (jax there is newer): the test compares its own reading.
  step gpu_checkpoint_inspect 60 sh -c "python3 launch/inspect.py --workdir='$W' --format=json >'$W/inspect_on_gpu.json'"
  cp "$R/machine.txt" "$W/"
}

if [ "$part" = open ]; then  # the open issue's figures (#3) with the fastest numerics, then training until the budget ends
  [ -d tests/data/gpu_checkpoint ] || gpu_checkpoint
  step train_mfu 280 python3 bench/train_mfu.py --config=configs/small.py $MFU --variants=$MFU_VARIANTS $TRAIN_CFG --out="$R/train_mfu.json"
  BEST=$(python3 bench/gpu_summary.py --best_flags "$R/train_mfu.json" 2>/dev/null)
  echo "$BEST" >"$BEST_FILE"  # for "train_small" in the next call on this machine
  if [ -s "$R/train_mfu.json" ]; then echo "numerics ${BEST:-as-configured}" >>"$R/status.txt"
  else echo "numerics as-configured: train_mfu gave no JSON, so no choice was made" >>"$R/status.txt"; fi
  step profile 90 python3 bench/profile_step.py --config=configs/small.py $PROFILE $BEST $TRAIN_CFG --out="$R/profile.json"
  step torch_reference 120 python3 bench/torch_reference.py --config=configs/small.py $TORCH --nojax $BEST $TRAIN_CFG --out="$R/torch_reference.json"
  step train_seeds 260 python3 bench/train_seeds.py --config=configs/small.py --seeds=$SEEDS --steps=20 --repeats=2 --run_steps=100 $BEST $TRAIN_CFG --out="$R/train_seeds.json"
  TRAIN_S=${TRAIN_S:-600} train_small
elif [ "$part" = all ]; then
  gpu_checkpoint
  step sampler 120 python3 bench/sampler.py --mode=batch_sizes --batch_sizes=$S_BATCH --out="$R/sampler.json"
  step train_mfu 150 python3 bench/train_mfu.py --config=configs/small.py --steps=20 --repeats=2 $TRAIN_CFG --out="$R/train_mfu.json"
  step train_seeds 200 python3 bench/train_seeds.py --config=configs/small.py --seeds=$SEEDS --steps=20 --repeats=2 --run_steps=100 $TRAIN_CFG --out="$R/train_seeds.json"
  step torch_reference 120 python3 bench/torch_reference.py --config=configs/small.py $TORCH --nojax $TRAIN_CFG --out="$R/torch_reference.json"
  step patching_sweep 120 python3 bench/patching_sweep.py $PATCH
  step mistral_forward 240 python3 bench/mistral_forward.py --shape=$MISTRAL --dtype=bfloat16 --batch=64 --seq=300 --checkpoint_mode=random
elif [ "$part" = train_small ]; then  # on the machine "open" ran on, with its numerics: resumes its run, then analyses it
  BEST=${BEST:-$(cat "$BEST_FILE" 2>/dev/null)}
  train_small "$ANALYZE_S"
  analyze_small
elif [ "$part" = mistral_patching ]; then
  step mistral_patching_compare 300 python3 bench/mistral_patching.py --shape=$MISTRAL --pairs=$PAIRS --loop_heads=16 --compilation_cache=/tmp/jc
  step mistral_patching_study 240 python3 bench/mistral_patching.py --shape=$MISTRAL --pairs=$PAIRS --nocompare --study --compilation_cache=/tmp/jc
fi
tar czf "$OUT/gpu_check.tgz" -C "$OUT" gpu_check && rm -r "$R"
echo "wrote $OUT/gpu_check.tgz"
