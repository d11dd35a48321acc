"""Patching sweeps (one vmapped call vs a Python loop), attribution patching, the metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp_fixtures import AttnOnlyConfig, attn_only_params, make_attn_only_forward
from logic_jax.interp import interventions as iv
from logic_jax.interp.attribution import attribution_sweep
from logic_jax.interp.metrics import LogitDiff, logit_diff, normalized_effect
from logic_jax.interp.pairs import context_tokens, logit_diff_metric, make_pairs
from logic_jax.interp.patching import patch_sweep_loop, patching_effects, patching_sweep
from logic_jax.models import gpt
from logic_jax.problem import format as fmt
from logic_jax.problem.config import ProblemConfig

PROBLEM = ProblemConfig(depth=3)
B = 16
ANSWER = fmt.answer_pos(3)
QUERY = fmt.query_pos(3)
GPT_CFG = gpt.GPTConfig(n_layers=2, n_heads=3, d_model=24, d_mlp=48, init_std=0.3)  # large weights: large effects
GPT_FORWARD = gpt.make_forward(GPT_CFG)
ATTN_CFG = AttnOnlyConfig(n_layers=2, n_heads=4, n_kv_heads=2)
ATTN_FORWARD = make_attn_only_forward(ATTN_CFG)


@pytest.fixture(scope="module")
def pairs():
    clean, cf = make_pairs(jax.random.PRNGKey(1), PROBLEM, B, "query")
    return context_tokens(clean, PROBLEM), context_tokens(cf, PROBLEM), logit_diff_metric(clean, cf)


@pytest.fixture(scope="module")
def gpt_params():
    return gpt.init_params(jax.random.PRNGKey(0), GPT_CFG)


@pytest.fixture(scope="module")
def attn_params():
    return attn_only_params(jax.random.PRNGKey(0), ATTN_CFG)


def _metric_of(forward, params, tokens, metric):
    return metric(iv.run_with_cache(forward, params, tokens, ())[0])


def _patched_by_hand(forward, params, clean, cf, metric, site, positions=None, heads=None):
    """The metric of ONE patched run built directly: ``site`` takes the cf run's values at
    ``positions`` x ``heads`` (no sweep plan, no position table of a sweep, no rearranging)."""
    _, cf_cache = iv.run_with_cache(forward, params, cf, [site])
    logits, _ = iv.run_with_cache(forward, params, clean, (), patches=iv.patch_from(cf_cache, site, positions=positions, heads=heads))
    return metric(logits)


# --- Metrics ------------------------------------------------------------------------------------
def test_logit_diff_and_normalized_effect():
    logits = jnp.arange(2 * 3 * 5, dtype=jnp.float32).reshape(2, 3, 5)
    ld = logit_diff(logits, jnp.array([2, 0]), jnp.array([4, 1]), jnp.array([0, 3]))
    np.testing.assert_array_equal(ld, [4.0, -2.0])
    np.testing.assert_array_equal(LogitDiff(jnp.array([2, 0]), jnp.array([4, 1]), jnp.array([0, 3]), reduce="none")(logits), ld)
    assert float(LogitDiff(1, jnp.array([4, 1]), jnp.array([0, 3]))(logits)) == 1.0
    np.testing.assert_allclose(normalized_effect(jnp.array([2.0, -1.0, 0.5]), 2.0, -1.0), [0.0, 1.0, 0.5])


# --- The vmapped sweep equals the loop ------------------------------------------------------------
@pytest.mark.parametrize(
    "site,over,kwargs",
    [
        ("hook_z", ("layer", "head"), dict(positions=[-1, QUERY])),  # paper.md's protocol
        pytest.param("hook_resid_pre", ("layer", "pos"), dict(positions=[0, QUERY, ANSWER]), marks=pytest.mark.slow),
        pytest.param("hook_pattern", ("pos", "head", "layer"), dict(positions=jnp.array([[QUERY, ANSWER]] * B), heads=[0, 2]), marks=pytest.mark.slow),
    ],
)
def test_vmapped_sweep_equals_loop(gpt_params, pairs, site, over, kwargs):
    clean, cf, metric = pairs
    swept = patching_sweep(GPT_FORWARD, gpt_params, clean, cf, metric, site, over, layers=2, **kwargs)  # upstream shared
    looped = patch_sweep_loop(GPT_FORWARD, gpt_params, clean, cf, metric, site, over, layers=2, **kwargs)
    sizes = dict(layer=2, head=len(kwargs.get("heads", range(3))), pos=np.shape(kwargs["positions"])[-1])
    assert swept.shape == tuple(sizes[a] for a in over)
    np.testing.assert_allclose(swept, looped, atol=1e-5)
    if site == "hook_z":  # the single program with the layer as data
        one_program = patching_sweep(GPT_FORWARD, gpt_params, clean, cf, metric, site, over, layers=2, share_upstream=False, **kwargs)
        np.testing.assert_allclose(one_program, looped, atol=1e-5)
    assert float(jnp.abs(swept - _metric_of(GPT_FORWARD, gpt_params, clean, metric)).max()) > 1e-3  # patching did something
    # Independently of the sweep's plan and tables: the last cell of every swept axis, patched by hand.
    cell = {a: sizes[a] - 1 for a in over}
    positions, heads = kwargs["positions"], kwargs.get("heads", [0, 1, 2])
    if "pos" in over:  # the last position given (per example for [B, n] positions)
        positions = positions[:, -1:] if np.ndim(positions) == 2 else positions[-1:]
    if "head" in over:
        heads = heads[-1:]
    name = f"blocks.1.{site}" if site == "hook_resid_pre" else f"blocks.1.attn.{site}"
    by_hand = _patched_by_hand(GPT_FORWARD, gpt_params, clean, cf, metric, name, positions, None if site == "hook_resid_pre" else heads)
    np.testing.assert_allclose(swept[tuple(cell[a] for a in over)], by_hand, atol=1e-5)


def test_chunked_sweep_and_per_example_metric(attn_params, pairs):
    clean, cf, metric = pairs
    per_example = LogitDiff(metric.pos, metric.tok_a, metric.tok_b, reduce="none")
    args = (ATTN_FORWARD, attn_params, clean, cf, per_example, "hook_z", ("layer", "head", "pos"))
    whole = patching_sweep(*args, layers=2, positions=[QUERY, ANSWER, 5])
    chunked = patching_sweep(*args, layers=2, positions=[QUERY, ANSWER, 5], chunk_size=5)  # 24 cells: 4 full chunks and a rest
    assert whole.shape == (2, 4, 3, B)  # the metric's own axis last
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    # Every cell against a single patched run built by hand: the pos axis follows the order of
    # the positions given ([QUERY, ANSWER, 5]), the head and layer axes the head and layer.
    for layer in range(2):
        for head in range(4):
            row = [_patched_by_hand(ATTN_FORWARD, attn_params, clean, cf, per_example, f"blocks.{layer}.attn.hook_z", [p], [head]) for p in (QUERY, ANSWER, 5)]
            np.testing.assert_allclose(whole[layer, head], np.stack(row), atol=1e-5, err_msg=f"layer {layer} head {head}")
    assert float(np.abs(np.diff(np.asarray(whole), axis=2)).max()) > 1e-3  # the positions differ: their order shows


def test_patching_a_whole_layer_gives_the_counterfactual(attn_params, pairs):
    clean, cf, metric = pairs
    result = patching_effects(ATTN_FORWARD, attn_params, clean, cf, metric, "hook_resid_pre", ("layer",), layers=2)
    np.testing.assert_allclose(result["patched"][0], result["cf"], atol=1e-5)  # everything downstream of layer 0's input
    np.testing.assert_allclose(result["effect"][0], 1.0, atol=1e-4)
    embed = patching_sweep(ATTN_FORWARD, attn_params, clean, cf, metric, ["hook_embed", "hook_pos_embed"], ())
    np.testing.assert_allclose(embed, result["cf"], atol=1e-5)


def test_ablation_sweep_from_a_dict_of_values(attn_params, pairs):
    clean, _, metric = pairs
    zeros = {f"blocks.{i}.attn.hook_v": 0.0 for i in range(2)}
    swept = patching_sweep(ATTN_FORWARD, attn_params, clean, zeros, metric, "hook_v", ("layer", "head"), layers=2)
    assert swept.shape == (2, 2)  # key/value heads
    site = "blocks.1.attn.hook_v"
    shape = iv.site_shapes(ATTN_FORWARD, attn_params, clean, [site])[site]
    by_hand = metric(iv.run_with_cache(ATTN_FORWARD, attn_params, clean, (), patches=iv.zero_ablate(site, shape, heads=1))[0])
    np.testing.assert_allclose(swept[1, 1], by_hand, atol=1e-5)


def test_sweep_errors_name_the_problem(attn_params, pairs):
    clean, cf, metric = pairs
    with pytest.raises(ValueError, match="blocks.0.hook_resid_pre.*no head axis"):
        patching_sweep(ATTN_FORWARD, attn_params, clean, cf, metric, "hook_resid_pre", ("layer", "head"), layers=2)
    with pytest.raises(ValueError, match="over="):
        patching_sweep(ATTN_FORWARD, attn_params, clean, cf, metric, "hook_z", ("layer", "heads"), layers=2)
    with pytest.raises(ValueError, match="needs layers"):
        patching_sweep(ATTN_FORWARD, attn_params, clean, cf, metric, "hook_z")
    for bad in (0, -1, 2.5):  # -1 failed deep in a reshape, 0 was silently all at once
        with pytest.raises(ValueError, match=rf"chunk_size must be None .* got {bad}"):
            patching_sweep(ATTN_FORWARD, attn_params, clean, cf, metric, "hook_z", layers=2, chunk_size=bad)
    with pytest.raises(ValueError, match="same shape"):
        patching_sweep(ATTN_FORWARD, attn_params, clean, cf[:, :-1], metric, "hook_z", layers=2)
    with pytest.raises(KeyError, match="blocks.1.attn.hook_z"):
        patching_sweep(ATTN_FORWARD, attn_params, clean, {"blocks.0.attn.hook_z": 0.0}, metric, "hook_z", layers=2)
    with pytest.raises(KeyError, match="blocks.5.attn.hook_z"):
        patching_sweep(ATTN_FORWARD, attn_params, clean, cf, metric, "hook_z", layers=[5])
    # A repeated site would be patched in one cell only (patches are keyed by site).
    with pytest.raises(ValueError, match=r"sites \['blocks.0.hook_resid_pre'\] appear more than once"):
        patching_sweep(ATTN_FORWARD, attn_params, clean, cf, metric, ["blocks.0.hook_resid_pre"] * 2, ("layer",))
    with pytest.raises(ValueError, match=r"sites \['blocks.1.attn.hook_z'\] appear more than once"):
        patching_sweep(ATTN_FORWARD, attn_params, clean, cf, metric, "hook_z", layers=[1, 0, 1])


# --- A hand-built head is found -------------------------------------------------------------------
def _query_copying_gpt(key):
    """A random GPT whose head (2, 0) copies the QUERY letter to ANSWER, where the unembedding reads it.

    Tokens and positions are one-hot in the residual stream (dims 0-44 and 45-82); the other
    heads and MLPs keep their small random weights.
    """
    cfg = gpt.GPTConfig(n_layers=3, n_heads=3, d_model=90, d_mlp=48)
    params = gpt.init_params(key, cfg)
    d, n_tok = cfg.d_model, fmt.VOCAB_SIZE
    pos_dim = lambda p: n_tok + p  # noqa: E731
    params["W_E"] = jnp.eye(n_tok, d)
    params["W_pos"] = jnp.zeros((cfg.max_len, d)).at[jnp.arange(38), pos_dim(jnp.arange(38))].set(1.0)
    params["W_U"] = jnp.eye(d, n_tok)
    attn = params["blocks"][2]["attn"]
    attn["W_Q"] = attn["W_Q"].at[:, 0].set(0.0).at[pos_dim(ANSWER), 0, 0].set(1.5)
    attn["W_K"] = attn["W_K"].at[:, 0].set(0.0).at[pos_dim(QUERY), 0, 0].set(1.5)
    letters = jnp.arange(fmt.NUM_LETTERS)
    attn["W_V"] = attn["W_V"].at[:, 0].set(0.0).at[letters, 0, letters].set(1.0)
    attn["W_O"] = attn["W_O"].at[0].set(0.0).at[0, letters, letters].set(1.0)
    return cfg, params


def test_sweep_finds_the_hand_built_query_head():
    cfg, params = _query_copying_gpt(jax.random.PRNGKey(3))
    forward = gpt.make_forward(cfg)
    clean_b, cf_b = make_pairs(jax.random.PRNGKey(4), PROBLEM, B, "query")
    clean, cf = context_tokens(clean_b, PROBLEM), context_tokens(cf_b, PROBLEM)
    metric = LogitDiff(ANSWER, clean[:, QUERY], cf[:, QUERY])  # the query letters
    _, cache = iv.run_with_cache(forward, params, clean, ["blocks.2.attn.hook_pattern"])
    assert float(cache["blocks.2.attn.hook_pattern"][:, 0, ANSWER, QUERY].min()) > 0.9
    result = patching_effects(forward, params, clean, cf, metric, "hook_z", ("layer", "head"), layers=3, positions=[ANSWER])
    assert float(result["clean"]) > 1.0 and float(result["cf"]) < -1.0
    effect = np.asarray(result["effect"])
    assert np.unravel_index(effect.argmax(), effect.shape) == (2, 0)
    assert effect[2, 0] > 0.9 and np.delete(effect.ravel(), 2 * 3).max() < 0.1
    attributed = attribution_sweep(forward, params, clean, cf, metric, "hook_z", ("layer", "head"), layers=3, positions=[ANSWER])
    assert np.unravel_index(np.asarray(attributed).argmin(), effect.shape) == (2, 0)  # LD falls most there


# --- Attribution patching -------------------------------------------------------------------------
@pytest.mark.parametrize("site,over", [("blocks.1.attn.hook_z", ("head", "pos")), ("blocks.1.attn.hook_v", ("head", "pos")), ("blocks.1.attn.hook_pattern", ("head", "pos")), ("blocks.1.hook_resid_post", ("pos",))])
def test_attribution_is_exact_where_the_model_is_linear(attn_params, pairs, site, over):
    """No LayerNorm, no MLP: the logits are linear in the last layer's z, v, pattern, residual."""
    clean, cf, metric = pairs
    positions = [3, QUERY, ANSWER]
    exact = patching_sweep(ATTN_FORWARD, attn_params, clean, cf, metric, site, over, positions=positions)
    attributed = attribution_sweep(ATTN_FORWARD, attn_params, clean, cf, metric, site, over, positions=positions)
    clean_metric = _metric_of(ATTN_FORWARD, attn_params, clean, metric)
    assert attributed.shape == exact.shape
    # The exact sweep, cell by cell, against single patched runs built by hand.
    heads = [None] if "head" not in over else [[h] for h in range(exact.shape[0])]
    by_hand = np.array([[_patched_by_hand(ATTN_FORWARD, attn_params, clean, cf, metric, site, [p], h) for p in positions] for h in heads])
    np.testing.assert_allclose(exact, by_hand.reshape(exact.shape), atol=1e-5)
    np.testing.assert_allclose(attributed, exact - clean_metric, atol=1e-4 * max(1.0, float(jnp.abs(exact - clean_metric).max())))


def test_attribution_tracks_exact_patching_on_a_random_gpt(gpt_params, pairs):
    clean, cf, metric = pairs
    sites = [f"blocks.{i}.attn.hook_z" for i in range(2)]
    clean_logits, clean_cache = iv.run_with_cache(GPT_FORWARD, gpt_params, clean, sites)
    _, cf_cache = iv.run_with_cache(GPT_FORWARD, gpt_params, cf, sites)
    args = (GPT_FORWARD, gpt_params, clean)
    kwargs = dict(site="hook_z", over=("layer", "head", "pos"), layers=2, positions=list(range(20, 38)))
    # Tiny perturbations: the first-order term is the whole effect.
    noise = {k: v + 1e-3 * jax.random.normal(jax.random.PRNGKey(i), v.shape) for i, (k, v) in enumerate(clean_cache.items())}
    exact = patching_sweep(*args, noise, metric, **kwargs) - metric(clean_logits)
    attributed = attribution_sweep(*args, noise, metric, **kwargs)
    assert np.corrcoef(np.ravel(exact), np.ravel(attributed))[0, 1] > 0.999
    # The real counterfactual (query switched): still a good screen on this random model.
    exact = patching_sweep(*args, cf_cache, metric, **kwargs) - metric(clean_logits)
    attributed = attribution_sweep(*args, cf_cache, metric, **kwargs)
    assert np.corrcoef(np.ravel(exact), np.ravel(attributed))[0, 1] > 0.9
