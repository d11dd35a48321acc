"""bench/train_trials.py's case-mixing sampler, its auxiliary previous-token loss and its start
from a checkpoint (its other loss options are step.loss_fn's, tested in test_train.py)."""

import dataclasses
import os
import sys

import jax
import numpy as np
import pytest
import scipy.special
from absl import app

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))

import train_trials  # noqa: E402
from train_fixtures import tiny_config  # noqa: E402

from logic_jax.models import gpt  # noqa: E402
from logic_jax.problem import format as fmt  # noqa: E402
from logic_jax.problem.sampler import sample  # noqa: E402
from logic_jax.train import config as config_lib  # noqa: E402
from logic_jax.train import inspection  # noqa: E402
from logic_jax.train import step as step_lib  # noqa: E402
from logic_jax.train.state import members_of, stack_members  # noqa: E402


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


def _fresh_params(config):
    cfg = config_lib.to_dict(config)
    program = step_lib.make_train(
        config_lib.model_config(cfg), config_lib.problem_config(cfg), cfg["batch_size"], step_lib.make_mesh(cfg["num_seeds"], 1)
    )
    return program.init(*stack_members(members_of(cfg))).params


def test_restored_params_are_the_named_seeds_of_the_newest_checkpoint():
    checkpoint = os.path.join(REPO, "tests", "data", "gpu_checkpoint")  # 2 seeds of tiny_config's model
    saved = inspection.load(checkpoint)[1].params
    like = _fresh_params(tiny_config())
    params = train_trials.restored_params(checkpoint, [1, 0], like)
    for got, want, fresh in zip(jax.tree.leaves(params), jax.tree.leaves(saved), jax.tree.leaves(like)):
        assert got.sharding == fresh.sharding
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want)[[1, 0]])
    with pytest.raises(app.UsageError, match=r"--init_members \[0, 2\]: .* holds seeds 0-1"):
        train_trials.restored_params(checkpoint, [0, 2], like)
    with pytest.raises(app.UsageError, match="parameter shapes differ from --config's"):
        train_trials.restored_params(checkpoint, [0, 1], _fresh_params(tiny_config(**{"model.d_mlp": 64})))


def test_previous_token_loss_adds_the_facts_letters_cross_entropy_read_through_w_e():
    cfg = config_lib.to_dict(tiny_config(**{"model.n_layers": 2}))
    model_cfg, problem_cfg = config_lib.model_config(cfg), config_lib.problem_config(cfg)
    forward = gpt.make_forward(model_cfg)
    params = gpt.init_params(jax.random.PRNGKey(0), model_cfg)
    batch = sample(jax.random.PRNGKey(1), problem_cfg, 16)
    loss = train_trials.with_previous_token_loss(step_lib.loss_fn, 0.5, problem_cfg.depth)
    # Compiled: run op by op, these forwards and gradients take most of a minute.
    main, acc = jax.jit(lambda p: step_lib.loss_fn(p, batch.tokens, batch.answer_mask, forward))(params)
    total, total_acc = jax.jit(lambda p: loss(p, batch.tokens, batch.answer_mask, forward))(params)
    # By hand: the three facts' truth values, each predicting the letter before it.
    tokens = np.asarray(batch.tokens)
    values = [i for i in range(fmt.facts_pos(problem_cfg.depth), problem_cfg.context_len) if tokens[0, i] in (fmt.TRUE, fmt.FALSE)]
    assert len(values) == 3 and all(fmt.is_letter(t) for t in tokens[:, np.array(values) - 1].ravel())
    _, cache = jax.jit(lambda p: forward(p, batch.tokens, cache=("blocks.0.hook_resid_post",)))(params)
    logits = np.asarray(cache["blocks.0.hook_resid_post"])[:, values] @ np.asarray(params["W_E"]).T
    aux = -np.take_along_axis(scipy.special.log_softmax(logits, -1), tokens[:, np.array(values) - 1][..., None], -1).mean()
    assert aux > 1.0  # an untrained model does not name the letters
    np.testing.assert_allclose(float(total), float(main) + 0.5 * aux, rtol=1e-5)
    assert float(total_acc) == float(acc)
    # Only blocks.0 and the tables before it get the auxiliary term's gradient.
    grad = jax.jit(jax.grad(lambda p: loss(p, batch.tokens, batch.answer_mask, forward)[0] - step_lib.loss_fn(p, batch.tokens, batch.answer_mask, forward)[0]))(params)
    flat = {jax.tree_util.keystr(k): float(np.abs(np.asarray(v)).max()) for k, v in jax.tree_util.tree_leaves_with_path(grad)}
    assert flat["['W_E']"] > 0 and flat["['W_pos']"] > 0
    later = {k: v for k, v in flat.items() if k.startswith("['blocks']") and not k.startswith("['blocks'][0]")}
    assert later and max(later.values()) < 1e-6, later
