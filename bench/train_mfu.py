r"""Model-FLOPs utilisation of the training step, and the share of the step spent sampling.

    python bench/train_mfu.py                                   # configs/small.py, on the GPU
    python bench/train_mfu.py --config=configs/tiny_cpu.py --steps=10    # a CPU smoke run

Times the trainer's compiled chunk (``--steps`` steps under ``lax.scan``, all seeds vmapped)
and two variants built from the same pieces: the sampling alone (the same keys, the batch
reduced to a checksum so XLA keeps it) and the step on one fixed pre-sampled batch (no
sampling). Model FLOPs per step are counted analytically (matmuls and attention, forward x 3
for training; embeddings, LayerNorm and the optimizer not counted) and checked against XLA's
cost analysis of one step. MFU is given against the device's dense peaks (FP32, TF32, BF16);
the step runs with the config's numerics (``model.dtype``, ``model.matmul_precision``: by
default float32, which XLA may run on TF32 tensor cores). Prints one JSON object.

``--variants`` also times the step with other numerics (``VARIANTS``: float32 matmuls with
TF32 forbidden, TF32 or bfloat16 matmuls asked for by name, bfloat16 activations with and
without cuDNN's flash attention; and remat "dots", which trades memory traffic for
recomputation), so one GPU run says which is fastest; a variant that fails (a kernel the device
lacks, memory) is reported with its error.
"""

import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from logic_jax.models import gpt  # noqa: E402
from logic_jax.problem import format as fmt  # noqa: E402
from logic_jax.problem.sampler import sample  # noqa: E402
from logic_jax.train import config as config_lib  # noqa: E402
from logic_jax.train import state as state_lib  # noqa: E402
from logic_jax.train import step as step_lib  # noqa: E402

# Numerics to compare, as config overrides (the config's own values are the first row).
VARIANTS = {
    "fp32": {"model.matmul_precision": "float32"},  # TF32 forbidden: true float32 matmuls
    "tf32": {"model.matmul_precision": "TF32_TF32_F32"},  # TF32 tensor cores, asked for by name
    "bf16mm": {"model.matmul_precision": "BF16_BF16_F32"},  # bfloat16 tensor cores, float32 activations
    "bf16": {"model.dtype": "bfloat16"},  # bfloat16 activations and matmuls
    "bf16fused": {"model.dtype": "bfloat16", "model.attention": "fused"},  # and cuDNN's flash attention on a GPU
    "dots": {"model.remat": "dots"},  # the config's numerics, elementwise ops recomputed in the backward pass
}

F = flags.FLAGS


def define_flags():
    """Called only when run as a script, so the tests can import time_variants() without the flags."""
    config_flags.DEFINE_config_file("config", os.path.join(REPO, "configs", "small.py"), "The run to measure.")
    flags.DEFINE_integer("steps", 50, "Steps per compiled call.")
    flags.DEFINE_integer("repeats", 3, "Timed calls (the best is kept).")
    flags.DEFINE_list("variants", [], f"Also time the step with these numerics: any of {', '.join(VARIANTS)}.")
    flags.DEFINE_string("out", None, "Also write the JSON here.")

# Dense peak FLOP/s by device kind (vendor datasheets; SXM parts). None: unknown.
PEAKS = {
    "H100": dict(fp32=67e12, tf32=494.7e12, bf16=989.4e12),
    "H200": dict(fp32=67e12, tf32=494.7e12, bf16=989.4e12),
    "A100": dict(fp32=19.5e12, tf32=156e12, bf16=312e12),
}


def model_flops_per_step(m: gpt.GPTConfig, batch: int, length: int, logit_positions: int) -> float:
    """Training FLOPs of one step of one seed: 3 x forward matmuls (+ attention), the last
    block's MLP and the unembedding at the ``logit_positions`` positions with a loss only."""
    d, f, v, layers = m.d_model, m.d_mlp, m.vocab_size, m.n_layers
    every_position = layers * (2 * 4 * d * d + 2 * 2 * length * d) + (layers - 1) * 2 * 2 * d * f
    return 3.0 * batch * (every_position * length + (2 * 2 * d * f + 2 * d * v) * logit_positions)


def _best(fn, *args, repeats):
    jax.block_until_ready(fn(*args))  # compile + warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def _program(config):
    """The trainer's compiled program for the config, and its initial state."""
    model_cfg, problem_cfg = config_lib.model_config(config), config_lib.problem_config(config)
    mesh = step_lib.make_mesh(config.num_seeds, config.num_devices)
    program = step_lib.make_train(model_cfg, problem_cfg, config.batch_size, mesh)
    return program, program.init(*state_lib.stack_members(state_lib.members_of(config_lib.to_dict(config))))


def _time_chunk(program, state, steps: int, repeats: int) -> float:
    """Best seconds of one compiled chunk of ``steps`` steps of every seed."""
    return _best(lambda s: program.chunk(s, steps)[1]["loss"], state, repeats=repeats)


def time_variants(config, names, steps: int, repeats: int) -> list[dict]:
    """Each VARIANTS entry's step time (``step_ms``), or the ``error`` that stopped it (a kernel a
    device lacks, memory): one failure leaves the other variants' figures."""
    out = []
    for name in names:
        row = dict(name=name, overrides=VARIANTS[name])
        try:
            row["step_ms"] = 1e3 * _time_chunk(*_program(config_lib.with_overrides(config, VARIANTS[name])), steps, repeats) / steps
        except Exception as e:  # noqa: BLE001 - reported in the JSON, the others still count
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        out.append(row)
    return out


def main(argv):
    del argv
    for name in F.variants:
        if name not in VARIANTS:
            raise app.UsageError(f"--variants: unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    config = F.config
    model_cfg, problem_cfg = config_lib.model_config(config), config_lib.problem_config(config)
    n_seeds, batch, steps = config.num_seeds, config.batch_size, F.steps
    program, state = _program(config)
    full_s = _time_chunk(program, state, steps, F.repeats)

    # Sampling alone: the same per-step keys, the batch folded into a checksum.
    def sample_only(state):
        def one(key, step0):
            def body(c, t):
                b = sample(state_lib.data_key(key, step0 + t), problem_cfg, batch)
                return c + b.tokens.sum() + b.answer_mask.sum(), None

            return jax.lax.scan(body, jnp.int32(0), jnp.arange(steps))[0]

        return jax.vmap(one)(state.key, state.step)

    sample_s = _best(jax.jit(sample_only, in_shardings=(program.sharding,)), state, repeats=F.repeats)

    variants = [dict(name="config", overrides={}, step_ms=1e3 * full_s / steps)] + time_variants(config, F.variants, steps, F.repeats)

    # The step without sampling: one fixed batch per seed.
    update = step_lib.make_update(model_cfg, problem_cfg)
    fixed = jax.jit(jax.vmap(lambda k: sample(k, problem_cfg, batch)), in_shardings=(program.sharding,))(state.key)

    def fixed_chunk(state, tokens, mask):
        def one(st, tok, msk):
            def body(st, _):
                st, (loss, _) = update(st, tok, msk)
                return st, loss

            return jax.lax.scan(body, st, None, length=steps)[1]

        return jax.vmap(one)(state, tokens, mask)

    nosample_s = _best(jax.jit(fixed_chunk, in_shardings=(program.sharding,) * 3), state, fixed.tokens, fixed.answer_mask, repeats=F.repeats)

    # XLA's count for one step of all seeds (a scan body is counted once, so compile one step).
    one_step = jax.jit(jax.vmap(program.step_fn), in_shardings=(program.sharding,))
    try:
        cost = one_step.lower(state).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        xla_flops = float(cost.get("flops", float("nan")))
    except Exception as e:  # noqa: BLE001 - not every backend reports it
        xla_flops = f"unavailable ({type(e).__name__})"

    n_devices = program.mesh.devices.size  # the mesh's (--config.num_devices may use fewer than are visible)
    length = problem_cfg.seq_len - 1  # the model sees tokens[:, :-1]
    logit_positions = length - fmt.answer_pos(problem_cfg.depth)  # the step's logits_from
    flops_step = model_flops_per_step(model_cfg, batch, length, logit_positions) * n_seeds
    achieved = flops_step * steps / full_s
    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in PEAKS.items() if k in kind), None)
    out = dict(
        device=kind,
        devices=n_devices,
        platform=jax.default_backend(),
        seeds=n_seeds,
        batch_size=batch,
        seq_len=length,
        model=config_lib.to_dict(config)["model"],
        params_per_seed=gpt.param_count(gpt.init_params(jax.random.PRNGKey(0), model_cfg)),
        steps_per_call=steps,
        step_ms=1e3 * full_s / steps,
        seed_steps_per_s=n_seeds * steps / full_s,
        model_flops_per_step=flops_step,
        xla_flops_per_step=xla_flops,
        achieved_tflops=achieved / 1e12,
        mfu=None if peak is None else {k: achieved / (p * n_devices) for k, p in peak.items()},
        sampling_only_ms=1e3 * sample_s / steps,
        sampling_share=sample_s / full_s,
        step_without_sampling_ms=1e3 * nosample_s / steps,
        sampling_share_by_difference=1 - nosample_s / full_s,
    )
    for v in (v for v in variants if "step_ms" in v):
        v["tflops"] = flops_step / (v["step_ms"] / 1e3) / 1e12
        v["mfu"] = None if peak is None else {k: 1e12 * v["tflops"] / (p * n_devices) for k, p in peak.items()}
    out["variants"] = variants
    from bench.report import emit

    emit(out, F.out)


if __name__ == "__main__":
    define_flags()
    app.run(main)
