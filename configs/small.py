"""The paper's setting (Part 1): 3 layers, 3 heads, depth-3 problems, LogOp queried 80%, OR and AND.

    python launch/train.py --config=configs/small.py --workdir=runs/small

Our choices (the paper published none of them): d_model 192 (d_head 64), d_mlp 768, GPT-2
init, pre-LayerNorm, tanh GELU; AdamW (b1 0.9, b2 0.99, weight decay 0.1 on matrices only),
peak lr 1e-3 after 1,000 warm-up steps, cosine decay to 1e-4 at step 50,000, global-norm
clipping at 1.0; batch 512 problems per step and seed; 8 seeds vmapped (one GPU, or sharded
over the devices of the mesh). Evaluation: greedy decoding of 4,096 held-out problems every
2,000 steps.

Numerics: float32 (``--config.model.dtype=bfloat16`` and ``--config.model.matmul_precision``
change them; see the README).

Result: not yet run to the end. On one H100 (2026-11-26, BENCHMARKS.md), 64 seeds trained at
2.8 steps/s (180 seed-steps/s; 8 seeds: 43 ms a step), with training token accuracy 91-97% at
step 800; at that speed 64 seeds take about 5 hours for the 50,000 steps, and the config's 8 seeds (43 ms a
step) about 36 minutes plus evaluations. Sized for one GPU: 50,000 steps x
8 seeds x 512 problems = 205M problems. On a 2-core CPU use configs/tiny_cpu.py instead.
Again on one H100 (2026-11-27, results/h100_small_8_seeds/), 8 seeds with
``--config.model.matmul_precision=BF16_BF16_F32`` (the fastest numerics there, 201
seed-steps/s): five seeds passed 99% exact match by step 4,000 (222 s of training), seed 1 stayed
at 94-96% and seeds 0 and 5 at 38% and 61% up to step 5,650, where the lease ended. 64 seeds
with those numerics asked for 91 GiB and did not fit in 80; ``--config.model.remat=dots`` (or
``block``) keeps far fewer activations for the backward pass (not yet run on a GPU).
"""

from logic_jax.train.config import base_config


def get_config():
    c = base_config()
    c.seed = 0
    c.num_seeds = 8
    c.num_steps = 50_000
    c.batch_size = 512
    c.steps_per_call = 200
    c.checkpoint_every = 2_000
    c.eval_every = 2_000
    c.eval_size = 4_096
    c.problem.update(depth=3, p_logop=0.8, p_and=0.5)
    c.model.update(n_layers=3, n_heads=3, d_model=192, d_mlp=768)
    c.optim.update(lr=1e-3, warmup_steps=1_000, decay_steps=50_000, end_lr_frac=0.1, weight_decay=0.1, b1=0.9, b2=0.99, clip_norm=1.0)
    return c
