"""A CPU-sized run: depth-2 problems, a 3-layer d_model-64 model, 2 seeds, on a 2-core CPU.

    python launch/train.py --config=configs/tiny_cpu.py --workdir=/tmp/tiny_cpu

Easier than the paper's setting so that it fits a CPU: depth 2 (contexts of 26 tokens, proofs
of at most 15), d_model 64 with 2 heads of 32, d_mlp 256, batch 128, AdamW lr 3e-3 (100 warm-up
steps, cosine decay to 3e-4 at step 3,000, weight decay 0.1, clipping at 1.0). The problem
distribution is the paper's (LogOp queried 80%, OR and AND equally often).

Result: RESULT_TBD
"""

from logic_jax.train.config import base_config


def get_config():
    c = base_config()
    c.num_seeds = 2
    c.num_steps = 3000
    c.batch_size = 128
    c.steps_per_call = 50
    c.checkpoint_every = 500
    c.eval_every = 500
    c.eval_size = 1024
    c.problem.update(depth=2, p_logop=0.8, p_and=0.5)
    c.model.update(n_layers=3, n_heads=2, d_model=64, d_mlp=256)
    c.optim.update(lr=3e-3, warmup_steps=100, decay_steps=3000, end_lr_frac=0.1, weight_decay=0.1)
    return c
