"""The small transformer: shapes, causality, hook sites, patching, config errors."""

import contextlib
import functools
import io
import math
import re

import jax
import jax.ad_checkpoint
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


def _numpy_gpt(p, tokens, cfg):
    """The GPT forward written out in float64 numpy, from the architecture, not from gpt.py.

    Pre-LayerNorm blocks (biased variance, eps inside the square root), learned absolute
    positions added to the token embedding, causal softmax attention with scores scaled by
    1/sqrt(d_head), a query and a value bias but no key bias, an output bias, GELU MLP, a
    final LayerNorm and an untied unembedding with a bias. GELU: the model documents and uses
    GPT-2's tanh approximation (``jax.nn.gelu(approximate=True)``), so this uses the tanh
    formula 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); the exact erf GELU differs from
    it by up to ~5e-3 per unit, which the tolerances below would see. Returns (logits, values
    of a few hook sites) in TransformerLens layouts.
    """
    f = lambda x: np.asarray(x, np.float64)  # noqa: E731

    def layer_norm(x, ln):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.ln_eps) * f(ln["scale"]) + f(ln["bias"])

    def gelu(x):
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))

    tokens = np.asarray(tokens)
    n = tokens.shape[1]
    x = f(p["W_E"])[tokens] + f(p["W_pos"])[:n][None]
    causal = np.tril(np.ones((n, n), bool))
    sites = {}
    for i in range(cfg.n_layers):
        blk = {k: jax.tree.map(f, v) for k, v in p["blocks"][i].items()}
        a = blk["attn"]
        h = layer_norm(x, blk["ln1"])
        q = np.einsum("bpd,dhe->bphe", h, a["W_Q"]) + a["b_Q"]
        k = np.einsum("bpd,dhe->bphe", h, a["W_K"])
        v = np.einsum("bpd,dhe->bphe", h, a["W_V"]) + a["b_V"]
        scores = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(cfg.d_model // cfg.n_heads)
        scores = np.where(causal, scores, -np.inf)
        pattern = np.exp(scores - scores.max(-1, keepdims=True))
        pattern /= pattern.sum(-1, keepdims=True)
        z = np.einsum("bhqk,bkhe->bqhe", pattern, v)
        x = x + np.einsum("bqhe,hed->bqd", z, a["W_O"]) + a["b_O"]
        m = blk["mlp"]
        mlp_out = gelu(layer_norm(x, blk["ln2"]) @ m["W_in"] + m["b_in"]) @ m["W_out"] + m["b_out"]
        x = x + mlp_out
        sites.update({f"blocks.{i}.attn.hook_pattern": pattern, f"blocks.{i}.attn.hook_z": z, f"blocks.{i}.hook_mlp_out": mlp_out, f"blocks.{i}.hook_resid_post": x})
    logits = layer_norm(x, p["ln_final"]) @ f(p["W_U"]) + f(p["b_U"])
    return logits, sites


def test_forward_matches_an_independent_numpy_forward(forward):
    # Random weights well away from init (every bias and LayerNorm parameter non-trivial, MLP
    # inputs of order 1 on both sides of 0, attention neither uniform nor one-hot), so the
    # attention scale, the nonlinearity, the biases and the LayerNorms all move the outputs.
    rng = np.random.default_rng(0)
    std = dict(W_E=1.0, W_pos=0.5, W_Q=0.25, W_K=0.25, W_V=0.4, W_O=0.4, W_in=0.5, W_out=0.3, W_U=0.5)

    def draw(path, x):
        name = path[-1].key
        if name == "scale":
            return (1.0 + 0.3 * rng.standard_normal(x.shape)).astype(np.float32)
        return (std.get(name, 0.2) * rng.standard_normal(x.shape)).astype(np.float32)

    p = jax.tree_util.tree_map_with_path(draw, gpt.abstract_params(CFG))
    tokens = _tokens(n=3, length=24, seed=5)
    names = ("blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post", "blocks.1.attn.hook_z")
    logits, cache = forward(jax.tree.map(jnp.asarray, p), tokens, cache=names)
    ref_logits, ref = _numpy_gpt(p, tokens, CFG)
    for name in names:
        np.testing.assert_allclose(np.asarray(cache[name], np.float64), ref[name], rtol=1e-4, atol=1e-4 * float(np.abs(ref[name]).max()), err_msg=name)
    np.testing.assert_allclose(np.asarray(logits, np.float64), ref_logits, rtol=1e-4, atol=1e-4 * float(np.abs(ref_logits).max()), err_msg="logits")
    # The weights are large enough that attention is not trivial: not (near) one-hot, not uniform.
    pattern = ref["blocks.0.attn.hook_pattern"][:, :, -1, :]
    assert 0.05 < pattern.max() < 0.9


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
        (dict(remat="full"), "remat"),
        (dict(attention="flash"), "attention"),
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


def test_bfloat16_gradients_follow_float32_biases_and_embeddings_included(params):
    """Each parameter's bfloat16 gradient within 2% of float32's. A bias' gradient sums over
    batch and positions (here 10,240), the embeddings' over tokens: summed in bfloat16 they were
    19-48% off (b_U, b_O, b_in); the model sums them in float32."""
    import dataclasses

    tokens = _tokens(n=256, length=40)
    targets = jnp.roll(tokens, -1, axis=1)

    def loss(p, cfg):
        logp = jax.nn.log_softmax(gpt.make_forward(cfg)(p, tokens)[0])
        return -jnp.take_along_axis(logp, targets[..., None], axis=-1).mean()

    ref = jax.jit(jax.grad(lambda p: loss(p, CFG)))(params)
    got = jax.jit(jax.grad(lambda p: loss(p, dataclasses.replace(CFG, dtype="bfloat16"))))(params)
    errors = {
        jax.tree_util.keystr(path): float(jnp.linalg.norm(g - r) / jnp.linalg.norm(r))
        for (path, r), g in zip(jax.tree_util.tree_flatten_with_path(ref)[0], jax.tree.leaves(got))
    }
    assert max(errors.values()) < 0.02, {k: round(v, 4) for k, v in errors.items() if v >= 0.02}
    assert min(errors.values()) > 0  # it did compute in bfloat16


def _saved_residual_bytes(fn, *args) -> int:
    """Bytes the backward pass of ``fn`` keeps from its forward (arguments aside), as
    ``jax.ad_checkpoint.print_saved_residuals`` lists them: what remat trades for recomputation."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        jax.ad_checkpoint.print_saved_residuals(fn, *args)
    total = 0
    for line in out.getvalue().splitlines():
        m = re.match(r"(bf16|f32|i32|bool)\[([\d,]*)\] (?!from the argument)", line)
        if m:
            total += math.prod(int(d) for d in m.group(2).split(",") if d) * {"bf16": 2, "f32": 4, "i32": 4, "bool": 1}[m.group(1)]
    return total


@pytest.mark.parametrize("remat, at_most", [("block", 0.2), ("dots", 0.5)])
def test_remat_keeps_the_gradients_and_saves_less_for_the_backward(params, remat, at_most):
    """model.remat recomputes inside the backward pass: the same gradients, far fewer bytes kept
    from the forward (on a GPU that is the activation memory; XLA's CPU scheduler does not
    always lower its peak, so that is measured in bench/train_seeds.py)."""
    import dataclasses

    tokens = _tokens(n=64, length=40)
    cfg = dataclasses.replace(CFG, remat=remat)

    def loss(c):
        return lambda p: gpt.make_forward(c)(p, tokens)[0].std()

    for ref, got in zip(jax.tree.leaves(jax.jit(jax.grad(loss(CFG)))(params)), jax.tree.leaves(jax.jit(jax.grad(loss(cfg)))(params))):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7)
    kept, kept_ref = _saved_residual_bytes(loss(cfg), params), _saved_residual_bytes(loss(CFG), params)
    assert 0 < kept < at_most * kept_ref, (kept, kept_ref)


def test_remat_leaves_a_caching_or_patching_forward_as_it_is(params):
    """Hooks that record or patch run without remat (their arrays would leak out of it): the
    same cache, the same patched logits, every site seen once."""
    import dataclasses

    cfg = dataclasses.replace(CFG, remat="block")
    tokens = _tokens()
    site = "blocks.1.attn.hook_z"
    patch = {site: Patch(value=jnp.zeros((3, 20, CFG.n_heads, CFG.d_head)))}
    ref, ref_cache = gpt.make_forward(CFG)(params, tokens, patch, cache=gpt.sites(CFG))
    got, got_cache = jax.jit(gpt.make_forward(cfg), static_argnames="cache")(params, tokens, patch, cache=gpt.sites(cfg))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    for name in gpt.sites(CFG):
        np.testing.assert_allclose(got_cache[name], ref_cache[name], rtol=1e-5, atol=1e-6)
    hooks = Hooks()
    assert hooks.passive
    gpt.bind(cfg, params)(tokens, hooks)
    assert sorted(hooks.seen) == sorted(gpt.sites(cfg))


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("bfloat16", 0.02)])
def test_fused_attention_keeps_the_logits_and_gradients(params, dtype, tol):
    """model.attention "fused" (jax.nn.dot_product_attention; cuDNN's kernel on a GPU, XLA's
    here) computes what the einsums do, forward and backward, vmapped over seeds as the trainer
    calls it; a forward whose hooks record nothing skips the score and pattern sites."""
    import dataclasses

    tokens = _tokens(n=8, length=40)
    einsum = dataclasses.replace(CFG, dtype=dtype)
    fused = dataclasses.replace(einsum, attention="fused")
    stacked = jax.vmap(lambda k: gpt.init_params(k, CFG))(jax.random.split(jax.random.PRNGKey(3), 2))

    def run(c):
        logits = jax.jit(jax.vmap(lambda p: gpt.make_forward(c)(p, tokens)[0]))(stacked)
        grads = jax.jit(jax.vmap(jax.grad(lambda p: gpt.make_forward(c)(p, tokens)[0].std())))(stacked)
        return logits, grads

    (ref_logits, ref_grads), (logits, grads) = run(einsum), run(fused)
    assert float(jnp.abs(logits - ref_logits).max()) < tol * float(jnp.abs(ref_logits).max())
    errors = {
        jax.tree_util.keystr(path): float(jnp.linalg.norm(g - r) / jnp.linalg.norm(r))
        for (path, r), g in zip(jax.tree_util.tree_flatten_with_path(ref_grads)[0], jax.tree.leaves(grads))
    }
    assert max(errors.values()) < 2 * tol, {k: round(v, 5) for k, v in errors.items() if v >= 2 * tol}
    hooks = Hooks()
    gpt.bind(fused, params)(tokens, hooks)
    skipped = {f"blocks.{i}.attn.{s}" for i in range(CFG.n_layers) for s in ("hook_attn_scores", "hook_pattern")}
    assert sorted(hooks.seen) == sorted(set(gpt.sites(CFG)) - skipped)


def test_fused_attention_leaves_a_caching_or_patching_forward_on_the_einsums(params):
    """The scores and the pattern are hook sites: a forward that caches or patches computes them,
    and gives what the einsum config gives."""
    import dataclasses

    fused = dataclasses.replace(CFG, attention="fused")
    tokens = _tokens()
    patch = {"blocks.0.attn.hook_pattern": Patch(value=jnp.full((3, CFG.n_heads, 20, 20), 1 / 20))}
    for patches in (None, patch):
        ref, ref_cache = gpt.make_forward(CFG)(params, tokens, patches, cache=gpt.sites(CFG))
        got, got_cache = jax.jit(gpt.make_forward(fused), static_argnames="cache")(params, tokens, patches, cache=gpt.sites(fused))
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
        assert set(got_cache) == set(gpt.sites(CFG))
        np.testing.assert_allclose(got_cache["blocks.1.attn.hook_pattern"], ref_cache["blocks.1.attn.hook_pattern"], rtol=1e-5, atol=1e-7)
    unpatched, _ = gpt.make_forward(fused)(params, tokens)
    assert not np.allclose(got, unpatched)  # the patch took effect


@pytest.mark.parametrize("remat", ["none", "block"])
def test_logits_from_gives_the_same_logits_and_gradients_at_those_positions(params, remat):
    """Training asks for the answer's logits only: the last block's MLP, the final LayerNorm and
    the unembedding skip the earlier positions, whose keys and values still count."""
    import dataclasses

    cfg = dataclasses.replace(CFG, remat=remat)
    tokens = _tokens(n=4, length=30)
    full = jax.jit(gpt.make_forward(cfg))(params, tokens)[0]
    part = jax.jit(functools.partial(gpt.make_forward(cfg), logits_from=17))(params, tokens)[0]
    assert part.shape == (4, 13, fmt.VOCAB_SIZE)
    np.testing.assert_allclose(part, full[:, 17:], rtol=1e-5, atol=1e-6)
    changed = tokens.at[:, 3].set((tokens[:, 3] + 1) % fmt.VOCAB_SIZE)
    assert not np.allclose(jax.jit(functools.partial(gpt.make_forward(cfg), logits_from=17))(params, changed)[0], part)  # earlier tokens count

    def loss(p, k):
        return gpt.make_forward(cfg)(p, tokens, logits_from=k)[0][:, 17 - k :].std()

    for g, r in zip(jax.tree.leaves(jax.jit(jax.grad(loss), static_argnums=1)(params, 17)), jax.tree.leaves(jax.jit(jax.grad(loss), static_argnums=1)(params, 0))):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-7)


def test_logits_from_errors(params):
    forward = gpt.make_forward(CFG)
    with pytest.raises(ValueError, match="logits_from=20 is outside the sequence"):
        forward(params, _tokens(), logits_from=20)
    with pytest.raises(ValueError, match="cache or patch with logits_from=0"):
        forward(params, _tokens(), cache=("blocks.1.hook_resid_post",), logits_from=5)


def test_tf32_named_computes_float32_where_there_is_no_tf32(params):
    """A run trained on a GPU with matmul_precision TF32_TF32_F32 must still read on a CPU (XLA
    refuses that algorithm there): the forward computes float32, bit for bit."""
    import dataclasses

    tf32 = dataclasses.replace(CFG, matmul_precision="TF32_TF32_F32")
    assert jax.default_backend() == "cpu"
    got = jax.jit(gpt.make_forward(tf32))(params, _tokens())[0]
    ref = jax.jit(gpt.make_forward(dataclasses.replace(CFG, matmul_precision="float32")))(params, _tokens())[0]
    np.testing.assert_array_equal(got, ref)


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
