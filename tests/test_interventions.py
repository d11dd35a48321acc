"""Interventions on hook sites: caching, patching from another run, ablations, steering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp_fixtures import AttnOnlyConfig, attn_only_params, make_attn_only_forward
from logic_jax.interp import interventions as iv
from logic_jax.interp.hooks import Patch
from logic_jax.interp.pairs import context_tokens, make_pairs
from logic_jax.models import gpt
from logic_jax.problem.config import ProblemConfig

PROBLEM = ProblemConfig(depth=3)
B = 16
CFG = gpt.GPTConfig(n_layers=3, n_heads=3, d_model=24, d_mlp=48, init_std=0.3)
FORWARD = gpt.make_forward(CFG)  # one function object: its compilation is reused


@pytest.fixture(scope="module")
def params():
    return gpt.init_params(jax.random.PRNGKey(0), CFG)


@pytest.fixture(scope="module")
def tokens():
    clean, cf = make_pairs(jax.random.PRNGKey(1), PROBLEM, B, "query")
    return context_tokens(clean, PROBLEM), context_tokens(cf, PROBLEM)


@pytest.fixture(scope="module")
def runs(params, tokens):
    """Logits and every site of the clean and the counterfactual run (one compilation)."""
    return [iv.run_with_cache(FORWARD, params, t, gpt.sites(CFG)) for t in tokens]


def _layer_norm(x, p, eps=CFG.ln_eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


def test_cache_matches_plain_forward(params, tokens, runs):
    logits, cache = runs[0]
    plain, _ = jax.jit(FORWARD)(params, tokens[0])
    np.testing.assert_array_equal(logits, plain)
    assert set(cache) == set(gpt.sites(CFG))
    # The last residual through the final LayerNorm and the unembedding is the logits.
    by_hand = _layer_norm(cache["blocks.2.hook_resid_post"], params["ln_final"]) @ params["W_U"] + params["b_U"]
    np.testing.assert_allclose(by_hand, logits, atol=1e-4)
    # A head's output recomputed from the cached pattern and values.
    z = jnp.einsum("bhqk,bkhe->bqhe", cache["blocks.1.attn.hook_pattern"], cache["blocks.1.attn.hook_v"])
    np.testing.assert_allclose(z, cache["blocks.1.attn.hook_z"], atol=1e-5)


def test_patching_own_values_changes_nothing_bitwise(params, tokens, runs):
    logits, cache = runs[0]
    patches = iv.merge_patches(
        iv.patch_from(cache, "blocks.1.hook_resid_pre"),
        iv.patch_from(cache, "blocks.0.attn.hook_z", positions=[3, -1], heads=[1]),
        iv.patch_from(cache, "blocks.2.attn.hook_pattern", positions=20, heads=[0, 2]),
        iv.patch_from(cache, "blocks.1.hook_mlp_out", positions=jnp.arange(B)[:, None] + 1),
    )
    patched, _ = iv.run_with_cache(FORWARD, params, tokens[0], (), patches=patches)
    np.testing.assert_array_equal(patched, logits)


def test_patching_everything_gives_the_counterfactual(params, tokens, runs):
    (clean_logits, _), (cf_logits, cf_cache) = runs
    assert not np.allclose(clean_logits, cf_logits, atol=1e-3)
    for sites in (["blocks.0.hook_resid_pre"], ["hook_embed", "hook_pos_embed"]):
        patches = iv.merge_patches(*(iv.patch_from(cf_cache, s) for s in sites))
        patched, _ = iv.run_with_cache(FORWARD, params, tokens[0], (), patches=patches)
        np.testing.assert_allclose(patched, cf_logits, atol=1e-5)


def test_patch_writes_only_the_chosen_positions_and_heads(params, tokens, runs):
    (clean_logits, clean_cache), (_, cf_cache) = runs
    site = "blocks.1.attn.hook_z"
    patches = iv.patch_from(cf_cache, site, positions=[30, 34], heads=[2])
    logits, cache = iv.run_with_cache(FORWARD, params, tokens[0], [site], patches=patches)
    expected = clean_cache[site].at[:, [30, 34], 2].set(cf_cache[site][:, [30, 34], 2])
    np.testing.assert_array_equal(cache[site], expected)
    np.testing.assert_array_equal(logits[:, :30], clean_logits[:, :30])  # causal: earlier positions untouched
    assert not np.allclose(logits[:, 34], clean_logits[:, 34], atol=1e-4)


def test_pattern_site_masks_heads_on_axis_1_and_queries_on_axis_2(params, tokens, runs):
    _, cache = runs[0]
    site = "blocks.0.attn.hook_pattern"
    patches = iv.zero_ablate(site, cache[site], positions=[10], heads=1)
    _, ablated = iv.run_with_cache(FORWARD, params, tokens[0], [site], patches=patches)
    np.testing.assert_array_equal(ablated[site], cache[site].at[:, 1, 10, :].set(0.0))


def test_per_example_positions(params, tokens, runs):
    _, cache = runs[0]
    site = "blocks.0.hook_resid_mid"
    pos = jnp.arange(B)[:, None] + 2  # example b at position b + 2
    _, ablated = iv.run_with_cache(FORWARD, params, tokens[0], [site], patches=iv.zero_ablate(site, cache[site], positions=pos))
    expected = cache[site].at[jnp.arange(B), jnp.arange(B) + 2].set(0.0)
    np.testing.assert_array_equal(ablated[site], expected)
    # Mean ablation at per-example positions: each example's own position gets the batch mean there.
    _, ablated = iv.run_with_cache(FORWARD, params, tokens[0], [site], patches=iv.mean_ablate(cache, site, positions=pos))
    mean = cache[site].mean(0)
    expected = cache[site].at[jnp.arange(B), jnp.arange(B) + 2].set(mean[jnp.arange(B) + 2])
    np.testing.assert_allclose(ablated[site], expected, atol=1e-6)


def test_mean_ablation_and_steering(params, tokens, runs):
    (_, clean_cache), (_, ref) = runs
    site = "blocks.1.hook_resid_pre"
    _, ablated = iv.run_with_cache(FORWARD, params, tokens[0], [site], patches=iv.mean_ablate(ref, site, positions=[34]))
    np.testing.assert_allclose(ablated[site][:, 34], jnp.broadcast_to(ref[site][:, 34].mean(0), (B, CFG.d_model)), atol=1e-6)
    np.testing.assert_array_equal(ablated[site][:, :34], clean_cache[site][:, :34])

    vector = jnp.arange(CFG.d_model, dtype=jnp.float32)
    patches = iv.steer(site, vector, clean_cache[site], positions=[-1], scale=0.5)
    _, steered = iv.run_with_cache(FORWARD, params, tokens[0], [site], patches=patches)
    np.testing.assert_allclose(steered[site][:, -1], clean_cache[site][:, -1] + 0.5 * vector, atol=1e-6)
    np.testing.assert_array_equal(steered[site][:, :-1], clean_cache[site][:, :-1])


def test_a_patch_applies_value_and_add_only_under_its_mask():
    x = jnp.arange(6.0).reshape(2, 3)
    mask = jnp.array([[True, False, False]])
    np.testing.assert_array_equal(Patch(mask=mask, add=10.0).apply(x), [[10, 1, 2], [13, 4, 5]])  # add was applied everywhere
    np.testing.assert_array_equal(Patch(value=-1.0, mask=mask, add=10.0).apply(x), [[9, 1, 2], [9, 4, 5]])
    np.testing.assert_array_equal(Patch(value=-1.0).apply(x), -jnp.ones((2, 3)))
    np.testing.assert_array_equal(Patch(add=1.0).apply(x), x + 1)


def test_gqa_heads_of_k_are_key_value_heads():
    cfg = AttnOnlyConfig(n_heads=4, n_kv_heads=2)
    forward = make_attn_only_forward(cfg)
    params = attn_only_params(jax.random.PRNGKey(0), cfg)
    toks = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, 26)
    site = "blocks.0.attn.hook_k"
    _, cache = iv.run_with_cache(forward, params, toks, [site])
    assert cache[site].shape == (2, 12, 2, cfg.d_head)
    _, ablated = iv.run_with_cache(forward, params, toks, [site], patches=iv.zero_ablate(site, cache[site], heads=1))
    np.testing.assert_array_equal(ablated[site], cache[site].at[:, :, 1].set(0.0))
    with pytest.raises(ValueError, match="hook_k.*out of range for 2 heads"):
        iv.zero_ablate(site, cache[site], heads=3)


def test_one_site_given_as_a_string_is_one_site(params, tokens, runs):
    site = "blocks.1.hook_resid_pre"
    logits, cache = iv.run_with_cache(FORWARD, params, tokens[0], site)
    _, expected = iv.run_with_cache(FORWARD, params, tokens[0], [site])
    assert list(cache) == [site] and np.array_equal(cache[site], expected[site])
    assert list(iv.site_shapes(FORWARD, params, tokens[0], site)) == [site]


def test_errors_name_the_site(params, tokens):
    with pytest.raises(KeyError, match="blocks.7.hook_resid_pre"):
        iv.site_shapes(FORWARD, params, tokens[0], ["blocks.7.hook_resid_pre"])
    cache = {"blocks.0.hook_resid_pre": jnp.zeros((B, 38, CFG.d_model))}
    with pytest.raises(KeyError, match="blocks.0.attn.hook_z"):
        iv.patch_from(cache, "blocks.0.attn.hook_z")
    with pytest.raises(ValueError, match="blocks.0.hook_resid_pre.*no head axis"):
        iv.patch_from(cache, "blocks.0.hook_resid_pre", heads=[0])
    with pytest.raises(ValueError, match="blocks.0.hook_resid_pre.*out of range"):
        iv.patch_from(cache, "blocks.0.hook_resid_pre", positions=[38])
    with pytest.raises(ValueError, match="blocks.0.attn.hook_z.*ndim == 4"):
        iv.zero_ablate("blocks.0.attn.hook_z", (6, 38, 24))
    with pytest.raises(ValueError, match="blocks.0.hook_resid_pre.*does not broadcast"):
        iv.steer("blocks.0.hook_resid_pre", jnp.ones(5), (6, 38, 24))
    with pytest.raises(ValueError, match="blocks.0.hook_resid_pre.*patched twice"):
        iv.merge_patches(iv.patch_from(cache, "blocks.0.hook_resid_pre"), iv.patch_from(cache, "blocks.0.hook_resid_pre"))
