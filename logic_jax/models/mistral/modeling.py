"""Mistral decoder in Flax NNX with TransformerLens-named hook sites, and its pure forward.

Numerics follow transformers' ``MistralForCausalLM`` (eager attention):

* float32 params: every op in float32; logits and every site match PyTorch to 1e-5.
* bfloat16 params: embeddings, projections, rotary and MLP in bfloat16 (matmuls accumulate in
  float32); RMSNorm statistics, attention scores and softmax in float32, the pattern cast back
  to bfloat16 before it weighs the values, as PyTorch does. Logits are always float32.
  Tested bf16 tolerance, against the float32 PyTorch reference on logits of magnitude ~5:
  max abs error <= 0.25, and mean abs error <= 1.25x PyTorch's own bf16 mean error + 1e-3
  (tests/test_mistral_port.py); typical measured: port 0.014 mean / 0.10-0.15 max,
  PyTorch bf16 0.014 mean / 0.09-0.10 max.

The compute dtype is the params' dtype, so one graphdef serves both.

Hook sites (``model_sites``): ``hook_embed`` (no positional embedding: rotary), then per block the
TransformerLens names of ``logic_jax.interp.hooks``. ``hook_q``/``hook_k`` are before rotary,
``hook_rot_q``/``hook_rot_k`` after; ``hook_k``/``hook_v``/``hook_rot_k`` have ``n_kv_heads``
heads (query head ``h`` reads kv head ``h // group_size``). ``hook_attn_scores`` is
``q.k / sqrt(d_head)`` in float32 with masked entries set to float32's minimum (finite, so a
patched or fully padded row cannot make NaNs); ``hook_pattern`` is its softmax.

Layouts (ours; ``params.py`` maps Hugging Face's ``[out, in]`` matrices onto them)::

    embed [vocab, d_model]        lm_head [d_model, vocab]
    q_proj [d_model, n_heads, d_head]     k_proj, v_proj [d_model, n_kv_heads, d_head]
    o_proj [n_heads, d_head, d_model]     gate_proj, up_proj [d_model, d_mlp]   down_proj [d_mlp, d_model]
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from logic_jax.interp.hooks import Hooks, Patch, block_site, site_names
from logic_jax.models.inputs import check_tokens, embed_rows
from logic_jax.models.mistral.config import MistralConfig

Array = Any

# Masked attention scores: finite so that patched or fully-masked rows never produce NaN.
MASKED_SCORE = float(jnp.finfo(jnp.float32).min)


def model_sites(num_layers: int) -> tuple[str, ...]:
    """Every hook site the Mistral forward calls: ``hook_embed`` plus per-block sites (no pos_embed)."""
    return ("hook_embed",) + site_names(num_layers, rotary=True, embed=False)


class RMSNorm(nnx.Module):
    """Root-mean-square norm; statistics in float32, then cast back before the learned scale."""

    def __init__(self, dim: int, eps: float, *, dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((dim,), dtype))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...] * normed.astype(x.dtype)


def rotary_tables(positions: Array, head_dim: int, theta: float, dtype) -> tuple[Array, Array]:
    """cos, sin ``[batch, pos, head_dim]`` for integer ``positions [batch, pos]`` (HF's half-split layout)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def apply_rotary(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate ``x [batch, pos, heads, d_head]``: ``x*cos + rotate_half(x)*sin`` (rotate_half = [-x2, x1])."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


def attention_allowed(seq_len: int, sliding_window: int | None, key_mask: Array | None) -> Array:
    """Boolean ``[batch or 1, 1, q, k]``: causal, inside the sliding window, key not padding."""
    q = jnp.arange(seq_len)[:, None]
    k = jnp.arange(seq_len)[None, :]
    allowed = k <= q
    if sliding_window is not None:
        allowed = allowed & (k > q - sliding_window)
    allowed = allowed[None, None]
    if key_mask is not None:
        allowed = allowed & key_mask.astype(bool)[:, None, None, :]
    return allowed


def _normal(rngs: nnx.Rngs, shape, std: float, dtype) -> nnx.Param:
    return nnx.Param((std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype))


class Attention(nnx.Module):
    """Grouped-query attention: query head ``h`` reads key/value head ``h // group_size``."""

    def __init__(self, config: MistralConfig, *, dtype, rngs: nnx.Rngs):
        c, std = config, config.initializer_range
        self.q_proj = _normal(rngs, (c.hidden_size, c.num_heads, c.head_dim), std, dtype)
        self.k_proj = _normal(rngs, (c.hidden_size, c.num_kv_heads, c.head_dim), std, dtype)
        self.v_proj = _normal(rngs, (c.hidden_size, c.num_kv_heads, c.head_dim), std, dtype)
        self.o_proj = _normal(rngs, (c.num_heads, c.head_dim, c.hidden_size), std, dtype)
        self.head_dim = c.head_dim

    def qkv(self, x: Array, cos: Array, sin: Array, hooks: Hooks, layer: int) -> tuple[Array, Array, Array]:
        """Rotated queries, keys and values, through their hook sites (shared with llm/cached.py)."""

        def site(name: str, value: Array) -> Array:
            return hooks(block_site(layer, name), value)

        q = site("hook_q", jnp.einsum("bsd,dhe->bshe", x, self.q_proj[...]))
        k = site("hook_k", jnp.einsum("bsd,dhe->bshe", x, self.k_proj[...]))
        v = site("hook_v", jnp.einsum("bsd,dhe->bshe", x, self.v_proj[...]))
        return site("hook_rot_q", apply_rotary(q, cos, sin)), site("hook_rot_k", apply_rotary(k, cos, sin)), v

    def __call__(self, x: Array, cos: Array, sin: Array, allowed: Array, hooks: Hooks, layer: int) -> Array:
        def site(name: str, value: Array) -> Array:
            return hooks(block_site(layer, name), value)

        q, k, v = self.qkv(x, cos, sin, hooks, layer)
        batch, seq, n_heads, d_head = q.shape
        n_kv = k.shape[2]
        grouped_q = q.reshape(batch, seq, n_kv, n_heads // n_kv, d_head)
        scores = jnp.einsum("bqkgd,bskd->bkgqs", grouped_q, k, preferred_element_type=jnp.float32)
        scores = scores.reshape(batch, n_heads, seq, seq) * (self.head_dim**-0.5)
        scores = site("hook_attn_scores", jnp.where(allowed, scores, MASKED_SCORE))
        pattern = site("hook_pattern", jax.nn.softmax(scores, axis=-1))

        grouped_pattern = pattern.astype(v.dtype).reshape(batch, n_kv, n_heads // n_kv, seq, seq)
        z = jnp.einsum("bkgqs,bskd->bqkgd", grouped_pattern, v).reshape(batch, seq, n_heads, d_head)
        z = site("hook_z", z)  # per head, patchable: the patched z then goes through o_proj
        return jnp.einsum("bshd,hdm->bsm", z, self.o_proj[...])


class MLP(nnx.Module):
    """SiLU-gated feed-forward: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: MistralConfig, *, dtype, rngs: nnx.Rngs):
        c, std = config, config.initializer_range
        self.gate_proj = _normal(rngs, (c.hidden_size, c.intermediate_size), std, dtype)
        self.up_proj = _normal(rngs, (c.hidden_size, c.intermediate_size), std, dtype)
        self.down_proj = _normal(rngs, (c.intermediate_size, c.hidden_size), std, dtype)

    def __call__(self, x: Array) -> Array:
        gate = jax.nn.silu(x @ self.gate_proj[...])
        return (gate * (x @ self.up_proj[...])) @ self.down_proj[...]


class DecoderLayer(nnx.Module):
    """Pre-norm residual block: attention then MLP, each added to the residual stream."""

    def __init__(self, config: MistralConfig, *, dtype, rngs: nnx.Rngs):
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.attn = Attention(config, dtype=dtype, rngs=rngs)
        self.post_attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.mlp = MLP(config, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array, cos: Array, sin: Array, allowed: Array, hooks: Hooks, layer: int) -> Array:
        resid_pre = hooks(block_site(layer, "hook_resid_pre"), x)
        attn_out = self.attn(self.input_norm(resid_pre), cos, sin, allowed, hooks, layer)
        attn_out = hooks(block_site(layer, "hook_attn_out"), attn_out)
        resid_mid = hooks(block_site(layer, "hook_resid_mid"), resid_pre + attn_out)
        mlp_out = hooks(block_site(layer, "hook_mlp_out"), self.mlp(self.post_attn_norm(resid_mid)))
        return hooks(block_site(layer, "hook_resid_post"), resid_mid + mlp_out)


def positions_from_mask(attention_mask: Array) -> Array:
    """Left padding: the first real token of each row gets position 0 (padding gets 0 too)."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


class Mistral(nnx.Module):
    """Mistral causal LM with an untied LM head. Random init: normal(initializer_range), norms at 1."""

    def __init__(self, config: MistralConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        c = config
        self.config = config
        self.embed = _normal(rngs, (c.vocab_size, c.hidden_size), c.initializer_range, dtype)
        self.layers = nnx.List([DecoderLayer(c, dtype=dtype, rngs=rngs) for _ in range(c.num_layers)])
        self.final_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=dtype)
        self.lm_head = _normal(rngs, (c.hidden_size, c.vocab_size), c.initializer_range, dtype)

    def sites(self) -> tuple[str, ...]:
        """Exactly the hook sites ``__call__`` calls, in forward order."""
        return model_sites(self.config.num_layers)

    def __call__(
        self,
        tokens: Array,
        hooks: Hooks | None = None,
        *,
        attention_mask: Array | None = None,
        positions: Array | None = None,
    ) -> Array:
        """Float32 logits ``[batch, pos, vocab]`` for int ``tokens [batch, pos]``.

        ``attention_mask [batch, pos]`` (1 = token, 0 = padding) masks padded keys; with left
        padding, ``positions`` default to counting real tokens only, as ``generate`` does in HF.
        """
        hooks = hooks if hooks is not None else Hooks(known=self.sites())
        check_tokens(tokens, self.config.vocab_size)
        if positions is None:
            if attention_mask is None:
                positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
            else:
                positions = positions_from_mask(attention_mask)
        dtype = self.embed.dtype
        cos, sin = rotary_tables(positions, self.config.head_dim, self.config.rope_theta, dtype)
        allowed = attention_allowed(tokens.shape[1], self.config.sliding_window, attention_mask)

        x = hooks("hook_embed", embed_rows(self.embed[...], tokens))
        for layer, block in enumerate(self.layers):
            x = block(x, cos, sin, allowed, hooks, layer)
        x = self.final_norm(x)
        return jnp.einsum("bsd,dv->bsv", x, self.lm_head[...], preferred_element_type=jnp.float32)


def abstract_model(config: MistralConfig, dtype=jnp.float32) -> Mistral:
    """The model with ``ShapeDtypeStruct`` leaves: shapes without allocating anything."""
    return nnx.eval_shape(lambda: Mistral(config, dtype=dtype, rngs=nnx.Rngs(0)))


def abstract_params(config: MistralConfig, dtype=jnp.float32) -> dict:
    """Pure-dict params tree of ``ShapeDtypeStruct``: the loader fills exactly these leaves."""
    return nnx.to_pure_dict(nnx.split(abstract_model(config, dtype))[1])


def init_params(config: MistralConfig, key: Array, dtype=jnp.float32, shardings: Any = None) -> dict:
    """Random params as a pure dict, created directly on device (``shardings``: a matching pytree)."""

    def build(k):
        return nnx.to_pure_dict(nnx.split(Mistral(config, dtype=dtype, rngs=nnx.Rngs(k)))[1])

    return jax.jit(build, out_shardings=shardings)(key)


ForwardFn = Callable[..., tuple[Array, dict[str, Array]]]


def make_forward(config_or_graphdef: MistralConfig | Any) -> ForwardFn:
    """Pure ``forward(params, tokens, patches=None, cache=(), *, attention_mask=None, positions=None)``.

    ``params`` is a plain pytree (the pure dict from ``nnx.to_pure_dict`` or the loader), so a
    patching sweep is ``jax.vmap`` over the arrays inside ``patches``. Returns
    ``(logits, {site: activation})`` for the site names in ``cache`` (a KeyError names any
    site the model does not have). Jit with ``static_argnames="cache"``.
    """
    if isinstance(config_or_graphdef, MistralConfig):
        graphdef = nnx.split(abstract_model(config_or_graphdef))[0]
    else:
        graphdef = config_or_graphdef

    def forward(
        params: Mapping,
        tokens: Array,
        patches: Mapping[str, Patch] | None = None,
        cache: tuple[str, ...] = (),
        *,
        attention_mask: Array | None = None,
        positions: Array | None = None,
    ) -> tuple[Array, dict[str, Array]]:
        model = nnx.merge(graphdef, params)
        hooks = Hooks(patches, cache, known=model.sites())
        logits = model(tokens, hooks, attention_mask=attention_mask, positions=positions)
        return logits, hooks.cache

    return forward
