"""Counterfactual pairs: one latent choice edited, both problems valid, both first tokens right."""

import dataclasses
import warnings

import jax
import numpy as np
import pytest

from logic_jax.interp import pairs
from logic_jax.problem import format as fmt
from logic_jax.problem import oracle
from logic_jax.problem.config import ProblemConfig

PROBLEM = ProblemConfig(depth=3)
N = 16
FIELDS = ("letters", "query_logop", "is_and", "truth", "operands_swapped", "rule_order", "fact_order")
EDITED = dict(query="query_logop", fact="truth", operator="is_and", chain_order="rule_order")


@pytest.fixture(scope="module")
def made():
    return {kind: pairs.make_pairs(jax.random.PRNGKey(0), PROBLEM, N, kind) for kind in pairs.KINDS}


def _check_valid(batch, cfg):
    """Every problem's answer is the oracle's proof of its context; first_answer its first token."""
    tokens = np.asarray(batch.tokens)
    for row, length, first in zip(tokens, np.asarray(batch.answer_len), np.asarray(batch.first_answer)):
        context = row[: cfg.context_len].tolist()
        proof = oracle.prove(context)
        assert row[cfg.context_len : cfg.context_len + length].tolist() == proof
        assert proof[0] == first


@pytest.mark.parametrize("kind", pairs.KINDS)
def test_each_kind_edits_exactly_its_choice(made, kind):
    clean, cf = made[kind]
    for name in FIELDS:
        a, b = np.asarray(getattr(clean.latent, name)), np.asarray(getattr(cf.latent, name))
        if name == EDITED[kind]:
            assert (a != b).reshape(N, -1).any(-1).all(), f"{kind}: {name} unchanged in some pair"
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{kind}: {name} changed")
    if kind == "fact":  # exactly one source fact flips
        assert ((np.asarray(clean.latent.truth) != np.asarray(cf.latent.truth)).sum(-1) == 1).all()
    if kind == "chain_order":
        np.testing.assert_array_equal(np.asarray(cf.logop_chain_first), ~np.asarray(clean.logop_chain_first))


@pytest.mark.parametrize("kind", pairs.KINDS)
def test_both_problems_are_valid_with_their_first_tokens(made, kind):
    clean, cf = made[kind]
    _check_valid(clean, PROBLEM)
    _check_valid(cf, PROBLEM)


def test_which_pairs_change_the_first_token(made):
    differ = {kind: np.asarray(pairs.first_tokens_differ(*made[kind])) for kind in pairs.KINDS}
    assert differ["query"].all()
    assert not differ["chain_order"].any()
    assert 0 < differ["fact"].sum() < N and 0 < differ["operator"].sum() < N
    # A linear query starts from c_0 whatever its fact: flipping a fact changes only LogOp starts.
    clean, _ = made["fact"]
    assert not (differ["fact"] & ~np.asarray(clean.query_logop)).any()


@pytest.mark.parametrize("kind", ["fact", "operator"])
def test_differing_only_keeps_pairs_whose_first_tokens_differ(kind):
    clean, cf = pairs.make_pairs(jax.random.PRNGKey(5), PROBLEM, N, kind, differing_only=True)
    assert clean.tokens.shape == cf.tokens.shape == (N, PROBLEM.seq_len)
    assert np.asarray(pairs.first_tokens_differ(clean, cf)).all()
    _check_valid(cf, PROBLEM)


def test_fixed_fact_source_and_depth_2():
    cfg = ProblemConfig(depth=2, p_logop=0.5)
    clean, cf = pairs.make_pairs(jax.random.PRNGKey(2), cfg, 16, "fact", fact_source=2)
    flipped = np.asarray(clean.latent.truth) != np.asarray(cf.latent.truth)
    assert flipped[:, 2].all() and not flipped[:, :2].any()
    _check_valid(cf, cfg)
    clean, cf = pairs.make_pairs(jax.random.PRNGKey(3), cfg, 16, "query")
    _check_valid(clean, cfg)
    _check_valid(cf, cfg)


def test_metric_and_contexts(made):
    clean, cf = made["query"]
    metric = pairs.logit_diff_metric(clean, cf)
    np.testing.assert_array_equal(metric.tok_a, clean.first_answer)
    np.testing.assert_array_equal(metric.tok_b, cf.first_answer)
    np.testing.assert_array_equal(metric.pos, PROBLEM.context_len - 1)
    contexts = np.asarray(pairs.context_tokens(clean, PROBLEM))
    assert contexts.shape == (N, PROBLEM.context_len) and (contexts[:, -1] == fmt.ANSWER).all()
    np.testing.assert_array_equal(contexts, np.asarray(clean.tokens)[:, : PROBLEM.context_len])
    with pytest.warns(UserWarning, match="every pair has the same first answer token"):  # the LD would be 0
        pairs.logit_diff_metric(*made["chain_order"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pairs.logit_diff_metric(clean, cf)  # query pairs: first tokens differ, no warning


def test_pair_errors():
    with pytest.raises(ValueError, match="chain_order.*0 of 16"):
        pairs.make_pairs(jax.random.PRNGKey(0), PROBLEM, N, "chain_order", differing_only=True, max_draws=2)
    shuffled = dataclasses.replace(PROBLEM, shuffle_rules=True)
    with pytest.raises(ValueError, match="chain_order.*shuffle_rules"):
        pairs.make_pairs(jax.random.PRNGKey(0), shuffled, 4, "chain_order")
    with pytest.raises(ValueError, match="unknown pair kind 'swap'"):
        pairs.make_pairs(jax.random.PRNGKey(0), PROBLEM, 4, "swap")
    with pytest.raises(ValueError, match="fact_source"):
        pairs.make_pairs(jax.random.PRNGKey(0), PROBLEM, 4, "fact", fact_source=3)
    with pytest.raises(ValueError, match="n must be at least 1, got 0"):
        pairs.make_pairs(jax.random.PRNGKey(0), PROBLEM, 0, "fact", differing_only=True)


def test_flip_fact_refuses_a_source_outside_0_to_2():
    latent = pairs.sample_latents(jax.random.PRNGKey(0), PROBLEM, 4)
    with pytest.raises(ValueError, match=r"source must be in 0..2.*\[3\]"):
        pairs.flip_fact(latent, 3)
    with pytest.raises(ValueError, match=r"source must be in 0..2.*\[-1\]"):
        pairs.flip_fact(latent, np.array([0, 1, -1, 2]))
    flipped = jax.jit(pairs.flip_fact)(latent, np.array([0, 1, 2, 0]))  # traced: not checked, in range here
    np.testing.assert_array_equal(np.asarray(flipped.truth) ^ np.asarray(latent.truth), np.eye(3, dtype=bool)[[0, 1, 2, 0]])
