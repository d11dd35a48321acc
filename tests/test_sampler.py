"""The JAX sampler against the oracle, problem.md's examples, the config and its statistics."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from logic_jax.problem import format as fmt
from logic_jax.problem import oracle
from logic_jax.problem.config import ConfigError, ProblemConfig
from logic_jax.problem.sampler import Latent, build, sample, sample_latents

L = {chr(ord("A") + i): i for i in range(26)}

# problem.md's examples, whitespace-normalised.
EXAMPLE_D3 = (
    "Rules: C implies Y. K implies Z. Y or Z implies S. W implies H. H implies G. Facts: K is false. "
    "C is true. W is true. Question: state the truth value of S. "
    "Answer: C is true. C implies Y; Y is true. Y or Z implies S; S is true."
)
EXAMPLE_D2_QUESTION = (
    "Rules: T or N implies P. H implies W. Facts: T is true. H is true. N is false. "
    "Question: state the truth value of W. Answer:"
)


def one_latent(letters, query_logop, is_and, truth, swapped, rule_order, fact_order):
    """A batch of one latent from readable choices."""
    arr = lambda x, dt: jnp.asarray([x], dt)  # noqa: E731
    return Latent(
        letters=arr([L[c] for c in letters], jnp.int32),
        query_logop=arr(query_logop, bool),
        is_and=arr(is_and, bool),
        truth=arr(truth, bool),
        operands_swapped=arr(swapped, bool),
        rule_order=arr(rule_order, jnp.int32),
        fact_order=arr(fact_order, jnp.int32),
    )


def split(batch, cfg, i):
    tokens = np.asarray(batch.tokens[i])
    mask = np.asarray(batch.answer_mask[i])
    return tokens[: cfg.context_len], tokens[mask]


def test_problem_md_example_depth3():
    cfg = ProblemConfig(depth=3)
    # a = C Y S, b = K Z (b_2 drawn, unused), c = W H G; LogOp chain first; facts K, C, W.
    lat = one_latent("CYSKZQWHG", True, False, (True, False, True), False, range(5), (1, 0, 2))
    batch = build(lat, cfg)
    context, answer = split(batch, cfg, 0)
    assert fmt.render(context, answer) == EXAMPLE_D3
    assert list(answer) == oracle.prove(context)
    assert len(context) == 38 and len(answer) == 20
    assert int(batch.first_answer[0]) == L["C"]
    assert fmt.CASE_NAMES[int(batch.case[0])] == "OR TF"


def test_problem_md_depth2_rendering():
    cfg = ProblemConfig(depth=2)
    lat = one_latent("TPNQHW", False, False, (True, False, True), False, range(2), (0, 2, 1))
    batch = build(lat, cfg)
    context, answer = split(batch, cfg, 0)
    assert len(context) == 26
    assert fmt.render(context) == EXAMPLE_D2_QUESTION
    assert fmt.render(context, answer) == EXAMPLE_D2_QUESTION + " H is true. H implies W; W is true."


CONFIGS = [
    ProblemConfig(depth=2),
    ProblemConfig(depth=3),
    ProblemConfig(depth=3, shuffle_rules=True, p_and=0.3),
    ProblemConfig(depth=4, p_logop=0.5),
    ProblemConfig(depth=5, shuffle_rules=True),
    ProblemConfig(depth=6, p_logop=1.0, p_and=1.0),
    ProblemConfig(depth=7, p_logop=0.0),
    ProblemConfig(depth=8, shuffle_rules=True, p_logop=0.9, p_and=0.1),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"d{c.depth}-shuffle{int(c.shuffle_rules)}-p{c.p_logop}-{c.p_and}")
def test_every_problem_is_valid_under_the_oracle(cfg):
    """13,000 problems per config, 104,000 in all, checked token by token."""
    n = 13_000
    batch = jax.device_get(sample(jax.random.key(cfg.depth), cfg, n))
    tokens, mask = batch.tokens, batch.answer_mask
    for i in range(n):
        context, answer = tokens[i, : cfg.context_len], tokens[i][mask[i]]
        s = oracle.structure(context)
        assert list(answer) == oracle.proof_of(s), fmt.render(context, answer)
        assert answer[0] == batch.first_answer[i]
        assert batch.case[i] == fmt.case_id(s.query_logop, s.op == fmt.AND, s.facts[s.first[0]], s.facts[s.second[0]])
        assert (tokens[i][~mask[i]][cfg.context_len :] == fmt.PAD).all()
        first_rule = fmt.parse_context(context).rules[0]  # written first: the LogOp chain's, or the linear one's?
        assert batch.logop_chain_first[i] == (first_rule.conclusion not in s.linear)
    # Metadata positions point where they say.
    rows = np.arange(n)
    assert (tokens[rows, batch.answer_pos] == fmt.ANSWER).all()
    assert (tokens[rows, batch.query_pos - 1] == fmt.QUESTION).all()
    rule_first = tokens[rows[:, None], batch.rule_pos]
    assert (rule_first < fmt.NUM_LETTERS).all()
    logop_idx = 2 * (cfg.depth - 2)
    assert (tokens[rows, batch.rule_pos[:, logop_idx] + 1] == np.where(batch.is_and, fmt.AND, fmt.OR)).all()
    sources = batch.latent.letters[:, [0, cfg.depth, 2 * cfg.depth]]
    assert (tokens[rows[:, None], batch.fact_pos] == sources).all()
    # Context and answer lengths of problem.md.
    if cfg.depth == 3:
        assert set(np.unique(batch.answer_len)) <= {18, 20, 29}
        assert int((batch.answer_len + cfg.context_len).max()) <= 67


def _z(count, n, p):
    """Standard score of a binomial count."""
    return (count - n * p) / np.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("p_logop,p_and,p_true", [(0.8, 0.5, 0.5), (0.3, 0.75, 0.2)])
def test_frequencies_match_the_config(p_logop, p_and, p_true):
    n = 200_000
    cfg = ProblemConfig(depth=3, p_logop=p_logop, p_and=p_and, p_true=p_true)
    b = jax.device_get(sample(jax.random.key(7), cfg, n))
    lat = b.latent
    limit = 4.5  # |z| beyond 4.5 has probability < 1e-5 under the null
    assert abs(_z(lat.query_logop.sum(), n, p_logop)) < limit
    assert abs(_z(lat.is_and.sum(), n, p_and)) < limit
    for k in range(3):
        assert abs(_z(lat.truth[:, k].sum(), n, p_true)) < limit
    assert abs(_z(b.logop_chain_first.sum(), n, 0.5)) < limit
    assert abs(_z(lat.operands_swapped.sum(), n, 0.5)) < limit
    # The case distribution: linear, then op x (first, second) truth values, all independent.
    t, f = p_true, 1 - p_true
    truths = [t * t, t * f, f * t, f * f]  # TT, TF, FT, FF
    expected = np.array([1 - p_logop] + [p_logop * (1 - p_and) * q for q in truths] + [p_logop * p_and * q for q in truths]) * n
    assert stats.chisquare(np.bincount(b.case, minlength=9), expected).pvalue > 1e-5
    # Letters uniform over the alphabet in every role; facts in uniformly shuffled order.
    for role in range(9):
        assert stats.chisquare(np.bincount(lat.letters[:, role], minlength=26)).pvalue > 1e-5
    perm_id = lat.fact_order[:, 0] * 3 + lat.fact_order[:, 1]
    counts = np.bincount(perm_id, minlength=9)[[1, 2, 3, 5, 6, 7]]
    assert counts.sum() == n and stats.chisquare(counts).pvalue > 1e-5


def test_shuffled_rule_order_is_uniform():
    n = 100_000
    cfg = ProblemConfig(depth=3, shuffle_rules=True)
    b = jax.device_get(sample(jax.random.key(3), cfg, n))
    # The LogOp rule (canonical index 2) lands in each of the 5 written slots equally often.
    slot = np.argmax(b.latent.rule_order == 2, axis=1)
    assert stats.chisquare(np.bincount(slot, minlength=5)).pvalue > 1e-5


def test_p_true_changes_the_facts_and_nothing_else():
    cfg, key, n = ProblemConfig(depth=3), jax.random.key(9), 2000
    fair = jax.device_get(sample(key, cfg, n))
    true = jax.device_get(sample(key, dataclasses.replace(cfg, p_true=1.0), n))
    assert true.latent.truth.all() and not fair.latent.truth.all()
    for field in ("letters", "query_logop", "is_and", "operands_swapped", "rule_order", "fact_order"):
        np.testing.assert_array_equal(getattr(true.latent, field), getattr(fair.latent, field), err_msg=field)
    assert not jax.device_get(sample(key, dataclasses.replace(cfg, p_true=0.0), n)).latent.truth.any()


def test_unshuffled_facts_are_written_a0_b0_c0_and_nothing_else_changes():
    cfg, key, n = ProblemConfig(depth=3), jax.random.key(5), 2000
    shuffled = jax.device_get(sample(key, cfg, n))
    ordered = jax.device_get(sample(key, dataclasses.replace(cfg, shuffle_facts=False), n))
    assert (ordered.latent.fact_order == [0, 1, 2]).all() and (shuffled.latent.fact_order != [0, 1, 2]).any(axis=1).mean() > 0.8
    for field in ("letters", "truth", "query_logop", "is_and", "operands_swapped", "rule_order"):
        np.testing.assert_array_equal(getattr(ordered.latent, field), getattr(shuffled.latent, field), err_msg=field)
    assert (np.diff(ordered.fact_pos, axis=1) == 3).all()  # a_0's fact, then b_0's, then c_0's
    sources = ordered.latent.letters[:, [0, cfg.depth, 2 * cfg.depth]]
    np.testing.assert_array_equal(np.take_along_axis(ordered.tokens, ordered.fact_pos, axis=1), sources)
    for row in ordered.tokens[:50]:
        context = row[: cfg.context_len].tolist()
        assert oracle.validate(context, row[cfg.context_len :][: len(oracle.prove(context))].tolist())


def test_fixed_choices_are_respected():
    cfg = ProblemConfig(
        depth=4, fix_query="logop", fix_op="or", fix_truth_first=True, fix_truth_second=False,
        fix_truth_linear=False, fix_logop_chain_first=False, fix_operands_swapped=True,
    )
    b = jax.device_get(sample(jax.random.key(0), cfg, 5000))
    assert b.query_logop.all() and not b.is_and.any()
    assert (b.truth == [True, False, False]).all()
    assert not b.logop_chain_first.any() and b.latent.operands_swapped.all()
    assert (b.case == fmt.CASE_NAMES.index("OR TF")).all()
    lin = jax.device_get(sample(jax.random.key(0), ProblemConfig(depth=2, fix_query="linear"), 1000))
    assert (lin.case == 0).all()


def test_same_key_same_batch_different_keys_differ():
    cfg = ProblemConfig(depth=3)
    a, b = sample(jax.random.key(1), cfg, 512), sample(jax.random.key(1), cfg, 512)
    c = sample(jax.random.key(2), cfg, 512)
    assert (np.asarray(a.tokens) == np.asarray(b.tokens)).all()
    assert (np.asarray(a.tokens) != np.asarray(c.tokens)).any(axis=1).mean() > 0.99


def test_under_vmap_and_scan():
    cfg = ProblemConfig(depth=3)
    keys = jax.random.split(jax.random.key(0), 4)
    stacked = jax.jit(jax.vmap(lambda k: sample(k, cfg, 64)))(keys)
    assert stacked.tokens.shape == (4, 64, cfg.seq_len)
    for i in range(4):
        assert (np.asarray(stacked.tokens[i]) == np.asarray(sample(keys[i], cfg, 64).tokens)).all()

    def body(count, key):
        batch = sample(key, cfg, 32)
        return count + batch.answer_mask.sum(), batch.tokens[:, 0]

    total, firsts = jax.jit(lambda ks: jax.lax.scan(body, jnp.int32(0), ks))(keys)
    expected = sum(int(sample(k, cfg, 32).answer_mask.sum()) for k in keys)
    assert int(total) == expected and firsts.shape == (4, 32)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(depth=1), "depth"),
        (dict(depth=9), "depth"),
        (dict(depth=3.0), "depth"),
        (dict(p_logop=-0.1), "p_logop"),
        (dict(p_and=1.5), "p_and"),
        (dict(fix_query="both"), "fix_query"),
        (dict(fix_query="logop", p_logop=0.0), "fix_query"),
        (dict(fix_query="linear", p_logop=1.0), "fix_query"),
        (dict(fix_op="and", p_and=0.0), "fix_op"),
        (dict(fix_op="or", p_and=1.0), "fix_op"),
        (dict(fix_truth_first="yes"), "fix_truth_first"),
        (dict(shuffle_facts=1), "shuffle_facts"),
        (dict(p_true=1.5), "p_true"),
        (dict(fix_truth_linear=True, p_true=0.0), "fix_truth_linear"),
        (dict(fix_truth_first=False, p_true=1.0), "fix_truth_first"),
        (dict(shuffle_rules=True, fix_logop_chain_first=True), "fix_logop_chain_first"),
    ],
)
def test_bad_configs_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        ProblemConfig(**kwargs)


def test_from_mapping_rejects_unknown_keys():
    assert ProblemConfig.from_mapping({"depth": 4}).depth == 4
    with pytest.raises(ConfigError, match="p_or"):
        ProblemConfig.from_mapping({"p_or": 0.5})


def test_numpy_scalars_become_python_numbers():
    cfg = ProblemConfig(depth=np.int64(4), p_logop=np.float32(0.5), p_and=np.float64(0.25))
    assert cfg == ProblemConfig(depth=4, p_logop=0.5, p_and=0.25)
    assert type(cfg.depth) is int and type(cfg.p_logop) is float
    json.dumps(cfg.to_dict())  # numpy scalars would not serialise
    with pytest.raises(ConfigError, match="'depth'"):
        ProblemConfig(depth=np.float64(3.0))


def test_config_is_a_static_hashable_value():
    a, b = ProblemConfig(depth=4), dataclasses.replace(ProblemConfig(depth=4))
    assert a == b and hash(a) == hash(b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.depth = 5


def test_latents_and_build_compose_to_sample():
    cfg = ProblemConfig(depth=5, shuffle_rules=True)
    key = jax.random.key(11)
    direct = sample(key, cfg, 100)
    staged = build(sample_latents(key, cfg, 100), cfg)
    assert (np.asarray(direct.tokens) == np.asarray(staged.tokens)).all()
