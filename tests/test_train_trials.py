"""bench/train_trials.py's case-mixing sampler (its loss options are step.loss_fn's, tested in test_train.py)."""

import dataclasses
import os
import sys

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))

import train_trials  # noqa: E402
from train_fixtures import tiny_config  # noqa: E402

from logic_jax.problem.sampler import sample  # noqa: E402
from logic_jax.train import config as config_lib  # noqa: E402


def test_mixed_sampler_draws_each_share_from_its_case():
    problem_cfg = config_lib.problem_config(config_lib.to_dict(tiny_config()))
    mixed = train_trials.mixed_sampler([(0.25, dict(fix_query="linear"))])
    batch = mixed(jax.random.PRNGKey(2), problem_cfg, 64)
    assert batch.tokens.shape == batch.answer_mask.shape == (64, problem_cfg.seq_len)
    # At depth 2 the answer mask of a linear proof is one length, a LogOp proof's two others.
    lengths = np.asarray(batch.answer_mask).sum(1)
    linear = np.asarray(sample(jax.random.PRNGKey(3), dataclasses.replace(problem_cfg, fix_query="linear"), 8).answer_mask).sum(1)
    logop = np.asarray(sample(jax.random.PRNGKey(4), dataclasses.replace(problem_cfg, fix_query="logop"), 64).answer_mask).sum(1)
    (linear_len,) = set(linear)
    assert linear_len not in set(logop) and len(set(logop)) == 2
    assert (lengths[48:] == linear_len).all()  # the last quarter: the linear share
    assert 0 < (lengths[:48] == linear_len).sum() < 24  # the rest as configured: 20% linear
