"""The small transformer: shapes, causality, hook sites, patching, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from logic_jax.interp.hooks import Hooks, Patch
from logic_jax.models import gpt
from logic_jax.problem import format as fmt

CFG = gpt.GPTConfig(n_layers=2, n_heads=2, d_model=16, d_mlp=32, max_len=fmt.seq_len(3))


@pytest.fixture(scope="module")
def params():
    return gpt.init_params(jax.random.PRNGKey(0), CFG)


@pytest.fixture(scope="module")
def forward():
    return jax.jit(gpt.make_forward(CFG), static_argnames="cache")


def _tokens(n=3, length=20, seed=1):
    return jax.random.randint(jax.random.PRNGKey(seed), (n, length), 0, fmt.VOCAB_SIZE)


def test_shapes_and_cached_sites(params, forward):
    tokens = _tokens()
    logits, cache = forward(params, tokens, cache=gpt.sites(CFG))
    b, n, h, e = 3, 20, CFG.n_heads, CFG.d_head
    assert logits.shape == (b, n, fmt.VOCAB_SIZE) and logits.dtype == jnp.float32
    assert set(cache) == set(gpt.sites(CFG))
    assert cache["hook_embed"].shape == cache["hook_pos_embed"].shape == (b, n, CFG.d_model)
    for i in range(CFG.n_layers):
        for s in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out"):
            assert cache[f"blocks.{i}.{s}"].shape == (b, n, CFG.d_model)
        for s in ("hook_q", "hook_k", "hook_v", "hook_z"):
            assert cache[f"blocks.{i}.attn.{s}"].shape == (b, n, h, e)
        for s in ("hook_attn_scores", "hook_pattern"):
            assert cache[f"blocks.{i}.attn.{s}"].shape == (b, h, n, n)
    pattern = cache["blocks.1.attn.hook_pattern"]
    np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-5)
    assert float(jnp.triu(pattern, 1).max()) == 0.0  # no weight on the future
    # The residual stream adds up: resid_mid = resid_pre + attn_out, resid_post = mid + mlp_out.
    np.testing.assert_allclose(cache["blocks.0.hook_resid_pre"], cache["hook_embed"] + cache["hook_pos_embed"], atol=1e-6)
    np.testing.assert_allclose(cache["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_mid"] + cache["blocks.1.hook_mlp_out"], atol=1e-6)


def test_every_site_is_called_once_per_forward(params):
    hooks = Hooks()
    gpt.bind(CFG, params)(_tokens(), hooks)
    assert sorted(hooks.seen) == sorted(gpt.sites(CFG))  # each exactly once


def test_causal(params, forward):
    tokens = _tokens(length=30)
    changed = tokens.at[:, 17:].set((tokens[:, 17:] + 5) % fmt.VOCAB_SIZE)
    a, _ = forward(params, tokens)
    b, _ = forward(params, changed)
    np.testing.assert_array_equal(a[:, :17], b[:, :17])
    assert not np.allclose(a[:, 17:], b[:, 17:])


def test_module_equals_pure_forward(params, forward):
    model = gpt.GPT(CFG, rngs=nnx.Rngs(params=jax.random.PRNGKey(0)))
    tokens = _tokens()
    np.testing.assert_allclose(model(tokens), forward(params, tokens)[0], rtol=1e-5, atol=1e-6)


def test_patch_z_per_head_flows_through_output_projection(params, forward):
    tokens = _tokens()
    clean, cache = forward(params, tokens, cache=("blocks.0.hook_attn_out", "blocks.0.attn.hook_z"))
    mask = jnp.zeros((1, 1, CFG.n_heads, 1), bool).at[:, :, 1].set(True)  # head 1 only
    patched, pcache = forward(params, tokens, patches={"blocks.0.attn.hook_z": Patch(value=0.0, mask=mask)}, cache=("blocks.0.hook_attn_out", "blocks.0.attn.hook_z"))
    z = pcache["blocks.0.attn.hook_z"]
    assert float(jnp.abs(z[:, :, 1]).max()) == 0.0
    np.testing.assert_array_equal(z[:, :, 0], cache["blocks.0.attn.hook_z"][:, :, 0])
    # attn_out is exactly the remaining head through W_O, plus the bias.
    w_o = params["blocks"][0]["attn"]["W_O"]
    expected = jnp.einsum("bpe,ed->bpd", z[:, :, 0], w_o[0]) + params["blocks"][0]["attn"]["b_O"]
    np.testing.assert_allclose(pcache["blocks.0.hook_attn_out"], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(clean, patched)


def test_patch_pattern_changes_z(params, forward):
    tokens = _tokens()
    names = ("blocks.1.attn.hook_z", "blocks.1.attn.hook_v")
    _, clean = forward(params, tokens, cache=names)
    n = tokens.shape[1]
    uniform = jnp.tril(jnp.ones((n, n))) / jnp.arange(1, n + 1)[:, None]
    _, patched = forward(params, tokens, patches={"blocks.1.attn.hook_pattern": Patch(value=uniform)}, cache=names)
    v = clean["blocks.1.attn.hook_v"]
    expected = jnp.einsum("qk,bkhe->bqhe", uniform, v)
    np.testing.assert_allclose(patched["blocks.1.attn.hook_z"], expected, rtol=1e-5, atol=1e-6)


def test_unknown_site_is_a_key_error(params):
    forward = gpt.make_forward(CFG)
    with pytest.raises(KeyError, match="blocks.7.hook_resid_post"):
        forward(params, _tokens(), cache=("blocks.7.hook_resid_post",))
    with pytest.raises(KeyError, match="hook_nope"):
        forward(params, _tokens(), patches={"hook_nope": Patch(add=1.0)})


def test_vmap_over_stacked_params(forward):
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    stacked = jax.vmap(lambda k: gpt.init_params(k, CFG))(keys)
    tokens = _tokens(n=2)
    out = jax.vmap(lambda p: forward(p, tokens)[0])(stacked)
    for i in range(3):
        one = gpt.init_params(keys[i], CFG)
        np.testing.assert_allclose(out[i], forward(one, tokens)[0], rtol=1e-5, atol=1e-6)
    assert gpt.param_count(gpt.init_params(keys[0], CFG)) == sum(x.size for x in jax.tree.leaves(stacked)) // 3


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(d_model=10, n_heads=3), "d_model"),
        (dict(n_layers=0), "n_layers"),
        (dict(d_mlp=2.5), "d_mlp"),
        (dict(ln_eps=0.0), "ln_eps"),
        (dict(dtype="float16"), "dtype"),
        (dict(matmul_precision="tf32"), "matmul_precision"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(gpt.GPTConfigError, match=field):
        gpt.GPTConfig(**kwargs)


def test_from_mapping_rejects_unknown_keys():
    with pytest.raises(gpt.GPTConfigError, match="d_modle"):
        gpt.GPTConfig.from_mapping({"d_modle": 32})
    assert gpt.GPTConfig.from_mapping({"d_model": 32, "n_heads": 4}).d_head == 8


def test_too_long_sequence(params):
    with pytest.raises(ValueError, match="max_len"):
        gpt.make_forward(CFG)(params, jnp.zeros((1, CFG.max_len + 1), jnp.int32))


def test_bfloat16_forward_follows_float32(params):
    """Same float32 parameters: bfloat16 activations, float32 softmax and logits, close outputs."""
    import dataclasses

    bf16 = dataclasses.replace(CFG, dtype="bfloat16")
    tokens = _tokens()
    ref, _ = gpt.make_forward(CFG)(params, tokens)
    logits, cache = jax.jit(gpt.make_forward(bf16), static_argnames="cache")(params, tokens, cache=gpt.sites(bf16))
    assert logits.dtype == jnp.float32 and cache["blocks.0.attn.hook_pattern"].dtype == jnp.float32
    assert cache["blocks.1.hook_resid_post"].dtype == cache["blocks.0.attn.hook_z"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(cache["blocks.0.attn.hook_pattern"].sum(-1)), 1.0, rtol=1e-5)
    scale = float(jnp.abs(ref).max())
    assert float(jnp.abs(logits - ref).max()) < 0.05 * scale  # bfloat16 has 8 bits of mantissa
    assert not np.array_equal(np.asarray(logits), np.asarray(ref))  # it did compute in bfloat16
    grads = jax.grad(lambda p: gpt.make_forward(bf16)(p, tokens)[0].mean())(params)
    assert all(g.dtype == jnp.float32 and bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("precision, expected", [("default", "DEFAULT"), ("float32", "HIGHEST"), ("tensorfloat32", "HIGH")])
def test_matmul_precision_reaches_every_matmul_forward_and_backward(params, precision, expected):
    import dataclasses

    cfg = dataclasses.replace(CFG, matmul_precision=precision)
    loss = lambda p: gpt.make_forward(cfg)(p, _tokens())[0].mean()  # noqa: E731
    text = jax.jit(jax.grad(loss)).lower(params).as_text()
    found = {line.split("precision = [")[1].split(",")[0] for line in text.splitlines() if "dot_general" in line}
    assert found == {expected}


def test_a_named_matmul_algorithm_reaches_every_matmul(params):
    import dataclasses

    cfg = dataclasses.replace(CFG, matmul_precision="BF16_BF16_F32")
    loss = lambda p: gpt.make_forward(cfg)(p, _tokens())[0].mean()  # noqa: E731
    dots = [line for line in jax.jit(jax.grad(loss)).lower(params).as_text().splitlines() if "dot_general" in line]
    assert dots and all("lhs_precision_type = bf16, rhs_precision_type = bf16, accumulation_type = f32" in d for d in dots)
