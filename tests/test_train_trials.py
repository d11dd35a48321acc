"""bench/train_trials.py's recipe changes: the context loss and the case-mixing sampler."""

import dataclasses
import os
import sys

import jax
import numpy as np
import optax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))

import train_trials  # noqa: E402
from train_fixtures import tiny_config  # noqa: E402

from logic_jax.models import gpt  # noqa: E402
from logic_jax.problem import format as fmt  # noqa: E402
from logic_jax.problem.sampler import sample  # noqa: E402
from logic_jax.train import config as config_lib  # noqa: E402
from logic_jax.train import step as step_lib  # noqa: E402


def _setup(batch=8):
    cfg = config_lib.to_dict(tiny_config())
    model_cfg, problem_cfg = config_lib.model_config(cfg), config_lib.problem_config(cfg)
    params = gpt.init_params(jax.random.PRNGKey(0), model_cfg)
    return params, gpt.make_forward(model_cfg), sample(jax.random.PRNGKey(1), problem_cfg, batch), problem_cfg


def test_context_loss_adds_the_context_tokens_cross_entropy():
    params, forward, batch, problem_cfg = _setup()
    first = fmt.answer_pos(problem_cfg.depth)
    trainer_loss, trainer_acc = step_lib.loss_fn(params, batch.tokens, batch.answer_mask, forward, logits_from=first)
    loss0, acc0 = train_trials.context_loss(0.0)(params, batch.tokens, batch.answer_mask, forward, logits_from=first)
    loss2, acc2 = train_trials.context_loss(2.0)(params, batch.tokens, batch.answer_mask, forward, logits_from=first)
    np.testing.assert_allclose(loss0, trainer_loss, rtol=1e-5)
    assert acc0 == acc2 == trainer_acc  # the accuracy stays the answer tokens'
    # By hand: the context's tokens 1..ANSWER, predicted from the positions before them.
    logits, _ = forward(params, batch.tokens[:, :-1])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :first], batch.tokens[:, 1 : first + 1])
    n_answer = np.asarray(batch.answer_mask).sum()
    np.testing.assert_allclose(loss2 - loss0, 2.0 * ce.sum() / n_answer, rtol=1e-5)
    assert int(batch.tokens[0, first]) == fmt.ANSWER  # the context's last token, the first answer prediction's input


def test_mixed_sampler_draws_each_share_from_its_case():
    _, _, _, problem_cfg = _setup()
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
