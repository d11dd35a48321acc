"""A CPU-sized run: every seed to >= 99% exact match on a 2-core CPU within 15 minutes.

    python launch/train.py --config=configs/tiny_cpu.py --workdir=/tmp/tiny_cpu

Result: TBD
"""

from logic_jax.train.config import base_config


def get_config():
    c = base_config()
    c.num_seeds = 2
    c.num_steps = 3000
    c.batch_size = 128
    c.steps_per_call = 100
    c.checkpoint_every = 500
    c.eval_every = 500
    c.eval_size = 1024
    c.problem.depth = 2
    c.model.update(n_layers=3, n_heads=2, d_model=64, d_mlp=256)
    c.optim.update(lr=3e-3, warmup_steps=100, decay_steps=c.num_steps, end_lr_frac=0.1, weight_decay=0.1)
    return c
