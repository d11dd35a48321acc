r"""Seed-steps per second: N seeds vmapped in one program against N sequential single-seed runs.

    python bench/train_seeds.py                      # N = 1, 8, 64; the tiny_cpu model
    python bench/train_seeds.py --seeds=1,8 --steps=40 --config=configs/small.py

Both sides run the trainer's compiled chunk (``lax.scan`` of ``--steps`` steps, problems
sampled inside): the vmapped side once with N members, the sequential side N times with one
member each, as N separate runs would (compilation excluded on both sides: each side is
warmed up first). Second comparison, whole runs of ``--run_steps`` steps: separate runs each
pay the compilation (``compile_s``, measured once and counted N times; process start-up not
counted), one vmapped run pays it once; ``speedup_one_process`` counts it once for the
sequential runs too (seed after seed in one process, as bench/torch_reference.py), so it is
what vmap gains from the step alone. Prints one JSON object with seed-steps/s and the
speed-ups per N.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from logic_jax.train import config as config_lib  # noqa: E402
from logic_jax.train import state as state_lib  # noqa: E402
from logic_jax.train import step as step_lib  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
config_flags.DEFINE_config_file("config", os.path.join(REPO, "configs", "tiny_cpu.py"), "Model, problem and batch size.")
flags.DEFINE_string("seeds", "1,8,64", "Values of N.")
flags.DEFINE_integer("steps", 20, "Steps per compiled call (and per timed run).")
flags.DEFINE_integer("repeats", 2, "Timed calls per measurement (the best is kept).")
flags.DEFINE_integer("run_steps", 500, "Length of the whole runs of the second comparison (compilation included).")
flags.DEFINE_string("out", None, "Also write the JSON here.")
F = flags.FLAGS


def _program(config, n):
    model_cfg, problem_cfg = config_lib.model_config(config), config_lib.problem_config(config)
    mesh = step_lib.make_mesh(n, 1)
    return step_lib.make_train(model_cfg, problem_cfg, config.batch_size, mesh)


def _members(config, n):
    c = config_lib.to_dict(config)
    c["num_seeds"] = n
    return state_lib.members_of(c)


def _out_of_memory(e: Exception) -> bool:
    return "RESOURCE_EXHAUSTED" in str(e)


def _vmapped(config, members, steps, repeats):
    """(first call's seconds, best chunk's seconds, the remat used): the config's remat first; on
    running out of device memory, again with model.remat "dots", then "block" (recomputation
    for memory: the same gradients). Raises the last out-of-memory error if none fits."""
    tries = [config.model.remat] + [r for r in ("dots", "block") if config.model.remat == "none"]
    for i, remat in enumerate(tries):
        try:
            program = _program(config_lib.with_overrides(config, {"model.remat": remat}), len(members))
            keys, hp = state_lib.stack_members(members)
            t = time.perf_counter()
            state = program.init(keys, hp)
            jax.block_until_ready(program.chunk(state, steps))
            first_s = time.perf_counter() - t
            return first_s, _time_chunk(program, state, steps, repeats)[0], remat
        except jax.errors.JaxRuntimeError as e:
            if not _out_of_memory(e) or i == len(tries) - 1:
                raise
            print(f"N = {len(members)}: out of device memory with model.remat={remat!r}; trying {tries[i + 1]!r}", file=sys.stderr, flush=True)
            program = state = None  # free the device buffers before the next try


def _time_chunk(program, state, steps, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        state, out = program.chunk(state, steps)
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t)
    return best, state


def main(argv):
    del argv
    config = F.config
    results = dict(device=str(jax.devices()[0].device_kind), platform=jax.default_backend(), batch_size=config.batch_size, model=config_lib.to_dict(config)["model"], depth=config.problem.depth, steps=F.steps, rows=[])

    # compile_s: init and the first call, less one warm call's time (the first call also trains a chunk).
    single = _program(config, 1)
    t = time.perf_counter()
    keys, hp = state_lib.stack_members(_members(config, 1))
    warm = single.init(keys, hp)
    jax.block_until_ready(single.chunk(warm, F.steps))
    compile_single = time.perf_counter() - t - _time_chunk(single, warm, F.steps, F.repeats)[0]
    for n in [int(s) for s in F.seeds.split(",")]:
        members = _members(config, n)
        # Vmapped: all N in one program.
        try:
            first_s, vmap_s, remat = _vmapped(config, members, F.steps, F.repeats)
        except jax.errors.JaxRuntimeError as e:
            if not _out_of_memory(e):
                raise
            results["rows"].append(dict(n=n, error=f"out of device memory with every model.remat tried: {str(e).splitlines()[0][:300]}"))
            print(json.dumps(results["rows"][-1]), file=sys.stderr, flush=True)
            break  # a larger N needs more
        compile_vmap = first_s - vmap_s if n > 1 else compile_single  # N=1 is the single program, cached
        # Sequential: N single-seed runs, one after the other, same compiled program.
        seq_s = 0.0
        for m in members:
            keys, hp = state_lib.stack_members([m])
            s, _ = _time_chunk(single, single.init(keys, hp), F.steps, F.repeats)
            seq_s += s
        # Whole runs of --run_steps steps: one compilation for the vmapped run; for the sequential
        # runs either one per run (separate processes, no compilation cache: how launch/train.py
        # runs a seed) or one in all (seed after seed in one process, as bench/torch_reference.py).
        whole_vmap = compile_vmap + F.run_steps / F.steps * vmap_s
        whole_seq = n * compile_single + F.run_steps / F.steps * seq_s
        whole_seq_one_process = compile_single + F.run_steps / F.steps * seq_s
        row = dict(
            n=n,
            remat=remat,  # the vmapped side's (the sequential side runs the config's)
            vmapped_seed_steps_per_s=n * F.steps / vmap_s,
            sequential_seed_steps_per_s=n * F.steps / seq_s,
            speedup=seq_s / vmap_s,
            compile_s=dict(vmapped=compile_vmap, single=compile_single),
            whole_run_s=dict(steps=F.run_steps, vmapped=whole_vmap, sequential=whole_seq, speedup=whole_seq / whole_vmap,
                             sequential_one_process=whole_seq_one_process, speedup_one_process=whole_seq_one_process / whole_vmap),
        )
        results["rows"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if F.out:  # the rows so far, in case a time limit stops the larger N
            with open(F.out, "w") as f:
                json.dump(results, f, indent=1)
    from bench.report import emit

    emit(results, F.out)


if __name__ == "__main__":
    app.run(main)
