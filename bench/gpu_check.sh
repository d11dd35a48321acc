#!/usr/bin/env bash
# The GPU checks and benchmarks of the day, in one device call; numbers land in $OUT/gpu_check.tgz.
#
# Here, once (the wheels the GPU image lacks; .whl/ is git-ignored):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0 mistral-common==1.13.1 tensorboardX==2.6.5
# Then, with the device tool: run(command="bash bench/gpu_check.sh all", carry=[".whl"], timeout_s=560)
#   part "all" (default, ~6 min): GPU facts, sampler, training MFU/seeds/PyTorch, small-model patching,
#                                 Mistral-7B forward (random bf16 weights) against PyTorch;
#   part "train_small" (TRAIN_S seconds, default 300): 64 seeds of configs/small.py trained until
#                                 killed, evaluated every 1,000 steps (metrics.jsonl comes back);
#   part "mistral_patching" (~8 min): the 7B head_z sweep against the per-head loop, and the whole study.
# Device time is 15 min a session, start included: run "all", then at once "train_small" (its
# issue is open), then "mistral_patching" only if time is left (its issue is resolved).
# Rehearse on the CPU with: GPU_CHECK_SMOKE=1 OUT=/tmp/gpu_out bash bench/gpu_check.sh all
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

step() {  # step NAME SECONDS CMD...: run with a time limit, log, record the exit status
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$R/$name.log" 2>&1
  echo "$name rc=$? ${limit}s-limit took=$((SECONDS - start))s" | tee -a "$R/status.txt"
}

{ date -u; nvidia-smi 2>&1 | head -15; python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"; } >"$R/machine.txt" 2>&1

if [ "$smoke" = 1 ]; then
  S_BATCH=1024,16384; SEEDS=1,8; MISTRAL=small; PAIRS=2; TRAIN_CFG="--config.batch_size=16 --config.model.d_model=48 --config.model.d_mlp=192"; PATCH="--pairs 64 --positions 8 --chunk-size 3"
  RUN_SEEDS=8; RUN_CFG="--config.num_steps=40 --config.steps_per_call=20 --config.eval_every=20 --config.checkpoint_every=20 --config.eval_size=64"
else
  S_BATCH=1048576,8388608,33554432; SEEDS=1,8,64; MISTRAL=7b; PAIRS=64; TRAIN_CFG=""; PATCH="--pairs 1000 --positions 38 --chunk-size 9"  # 9 cells x 1000 pairs a chunk: ~7 GB
  RUN_SEEDS=64; RUN_CFG="--config.eval_every=1000 --config.checkpoint_every=1000"
fi

if [ "$part" = all ]; then
  step sampler 120 python3 bench/sampler.py --mode=batch_sizes --batch_sizes=$S_BATCH --out="$R/sampler.json"
  step train_mfu 150 python3 bench/train_mfu.py --config=configs/small.py --steps=20 --repeats=2 $TRAIN_CFG --out="$R/train_mfu.json"
  step train_seeds 200 python3 bench/train_seeds.py --config=configs/small.py --seeds=$SEEDS --steps=20 --repeats=2 --run_steps=100 $TRAIN_CFG --out="$R/train_seeds.json"
  step torch_reference 120 python3 bench/torch_reference.py --config=configs/small.py --seeds=4 --steps=20 --nojax $TRAIN_CFG --out="$R/torch_reference.json"
  step patching_sweep 120 python3 bench/patching_sweep.py $PATCH
  step mistral_forward 240 python3 bench/mistral_forward.py --shape=$MISTRAL --dtype=bfloat16 --batch=64 --seq=300 --checkpoint_mode=random
elif [ "$part" = train_small ]; then
  # Killed by its time limit (rc=124 expected); the wall time to 100% is read from metrics.jsonl.
  # The workdir stays outside $OUT (its checkpoints are large); rerunning resumes it.
  W=${TRAIN_WORKDIR:-/tmp/small_run}
  step train_small "${TRAIN_S:-300}" python3 launch/train.py --config=configs/small.py --config.num_seeds=$RUN_SEEDS \
    --config.progress=False $RUN_CFG $TRAIN_CFG --workdir="$W"
  cp "$W/metrics.jsonl" "$W/run.json" "$R/"
elif [ "$part" = mistral_patching ]; then
  step mistral_patching_compare 300 python3 bench/mistral_patching.py --shape=$MISTRAL --pairs=$PAIRS --loop_heads=16 --compilation_cache=/tmp/jc
  step mistral_patching_study 240 python3 bench/mistral_patching.py --shape=$MISTRAL --pairs=$PAIRS --nocompare --study --compilation_cache=/tmp/jc
fi
tar czf "$OUT/gpu_check.tgz" -C "$OUT" gpu_check && rm -r "$R"
echo "wrote $OUT/gpu_check.tgz"
