"""Mistral's forward over the last tokens of a prompt, given the keys and values of the rest.

Why: the paper's sweeps patch only the last P positions (default 5). In a causal model every
earlier position is unchanged by such a patch, in every layer, so a patched run needs only
the last P tokens, attending to the clean run's cached keys and values of the prefix. For a
~350-token 6-shot prompt that is ~70x less compute per patched run than rerunning the whole
prompt, which is what the authors' loop does (and what makes a 32 x 32 head sweep fast).

``make_suffix_forward(config)`` has the shared hook interface, so ``interp.patching`` sweeps
it unchanged (the prefix and the positions ride in ``forward_kwargs``)::

    forward(params, tokens [B, S], patches=None, cache=(), *, prefix: Prefix, positions [B, S],
            attention_mask=None [B, S] (padding inside the suffix; prefill only))
        -> (logits [B, 1 or S, V] float32, {site: activation at the S suffix positions})

Every site is the full model's site restricted to the suffix positions; ``hook_attn_scores``
and ``hook_pattern`` are ``[B, H, S, Lp + S]`` (key index = position in the padded prompt).
Numerics are those of ``models.mistral.modeling`` (the same modules and dtypes; the only
difference is that the attention sums over prefix and suffix keys in two float32 einsums):
tested equal to the full forward at 1e-5 in float32.

``prefill`` runs a prompt with an empty prefix and returns its ``Prefix``; ``decode`` (in
``accuracy.py``) grows a prefix buffer one token at a time (a KV cache).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from logic_jax.interp.hooks import Hooks, block_site
from logic_jax.models.mistral.config import MistralConfig
from logic_jax.models.mistral.modeling import MASKED_SCORE, abstract_model, positions_from_mask, rotary_tables

Array = Any


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Prefix:
    """Cached keys (after rotary) and values of the tokens before a suffix, for every layer."""

    k: Array  # [layers, B, Lp, n_kv, d_head]
    v: Array  # [layers, B, Lp, n_kv, d_head]
    key_mask: Array  # bool [B, Lp]: False for padding (and unwritten buffer slots)
    start: Array  # int32 []: index of the first suffix token in the padded prompt (sliding window)

    @property
    def length(self) -> int:
        return self.k.shape[2]


def empty_prefix(config: MistralConfig, batch: int, dtype) -> Prefix:
    shape = (config.num_layers, batch, 0, config.num_kv_heads, config.head_dim)
    return Prefix(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch, 0), bool), jnp.zeros((), jnp.int32))


def _allowed(prefix: Prefix, seq: int, window: int | None, suffix_mask: Array | None) -> tuple[Array, Array]:
    """Boolean masks ``[B, 1, S, Lp]`` (prefix keys) and ``[B|1, 1, S, S]`` (suffix keys)."""
    q = prefix.start + jnp.arange(seq)[:, None]  # query index in the padded prompt
    j = jnp.arange(prefix.length)[None, :]
    pre = prefix.key_mask[:, None, None, :] & (j <= q)[None, None]
    s = jnp.arange(seq)
    suf = s[None, :] <= s[:, None]
    if window is not None:
        pre = pre & (j > q - window)[None, None]
        suf = suf & (s[None, :] > s[:, None] - window)
    suf = suf[None, None]
    if suffix_mask is not None:  # padding inside the suffix (prefill of left-padded prompts)
        suf = suf & suffix_mask.astype(bool)[:, None, None, :]
    return pre, suf


def _attention(attn, x, cos, sin, pk, pv, allowed_pre, allowed_suf, hooks: Hooks, layer: int):
    """``modeling.Attention`` with prefix keys/values: same einsums, sites and dtypes."""

    def site(name, value):
        return hooks(block_site(layer, name), value)

    q, k, v = attn.qkv(x, cos, sin, hooks, layer)

    batch, seq, n_heads, d_head = q.shape
    n_kv, lp = k.shape[2], pk.shape[1]
    grouped_q = q.reshape(batch, seq, n_kv, n_heads // n_kv, d_head)
    # Two einsums instead of a concat of the keys: under a vmapped sweep the prefix is shared
    # by every cell, and a concat would copy it once per cell.
    pre = jnp.einsum("bqkgd,bskd->bkgqs", grouped_q, pk, preferred_element_type=jnp.float32).reshape(batch, n_heads, seq, lp)
    suf = jnp.einsum("bqkgd,bskd->bkgqs", grouped_q, k, preferred_element_type=jnp.float32).reshape(batch, n_heads, seq, seq)
    scores = jnp.concatenate([pre, suf], axis=-1) * (attn.head_dim**-0.5)
    rows = max(allowed_pre.shape[0], allowed_suf.shape[0])
    allowed = jnp.concatenate(
        [jnp.broadcast_to(allowed_pre, (rows, 1, seq, lp)), jnp.broadcast_to(allowed_suf, (rows, 1, seq, seq))], axis=-1
    )
    scores = site("hook_attn_scores", jnp.where(allowed, scores, MASKED_SCORE))
    pattern = site("hook_pattern", jax.nn.softmax(scores, axis=-1)).astype(v.dtype)

    grouped = pattern.reshape(batch, n_kv, n_heads // n_kv, seq, lp + seq)
    z = jnp.einsum("bkgqs,bskd->bqkgd", grouped[..., :lp], pv, preferred_element_type=jnp.float32)
    z = z + jnp.einsum("bkgqs,bskd->bqkgd", grouped[..., lp:], v, preferred_element_type=jnp.float32)
    z = site("hook_z", z.astype(v.dtype).reshape(batch, seq, n_heads, d_head))
    return jnp.einsum("bshd,hdm->bsm", z, attn.o_proj[...])


def _block(block, x, cos, sin, pk, pv, allowed_pre, allowed_suf, hooks: Hooks, layer: int):
    """``modeling.DecoderLayer`` with the prefix attention."""
    resid_pre = hooks(block_site(layer, "hook_resid_pre"), x)
    attn_out = _attention(block.attn, block.input_norm(resid_pre), cos, sin, pk, pv, allowed_pre, allowed_suf, hooks, layer)
    attn_out = hooks(block_site(layer, "hook_attn_out"), attn_out)
    resid_mid = hooks(block_site(layer, "hook_resid_mid"), resid_pre + attn_out)
    mlp_out = hooks(block_site(layer, "hook_mlp_out"), block.mlp(block.post_attn_norm(resid_mid)))
    return hooks(block_site(layer, "hook_resid_post"), resid_mid + mlp_out)


@functools.lru_cache(maxsize=16)
def make_suffix_forward(config: MistralConfig, last_only: bool = True):
    """The suffix forward of ``config`` (see the module docstring); one function object per
    (config, last_only), so jit caches keyed on it are reused. ``last_only``: logits of the
    last suffix position only (``[B, 1, V]``), all a first-token metric needs."""
    graphdef = nnx.split(abstract_model(config))[0]

    def forward(params, tokens, patches=None, cache=(), *, prefix: Prefix, positions, attention_mask=None):
        model = nnx.merge(graphdef, params)
        hooks = Hooks(patches, cache, known=model.sites())
        cos, sin = rotary_tables(positions, config.head_dim, config.rope_theta, model.embed.dtype)
        allowed_pre, allowed_suf = _allowed(prefix, tokens.shape[1], config.sliding_window, attention_mask)
        x = hooks("hook_embed", jnp.take(model.embed[...], tokens, axis=0))
        for layer, block in enumerate(model.layers):
            x = _block(block, x, cos, sin, prefix.k[layer], prefix.v[layer], allowed_pre, allowed_suf, hooks, layer)
        if last_only:
            x = x[:, -1:]
        x = model.final_norm(x)
        logits = jnp.einsum("bsd,dv->bsv", x, model.lm_head[...], preferred_element_type=jnp.float32)
        return logits, hooks.cache

    forward.__qualname__ = f"suffix_forward[{config.num_layers}L,{'last' if last_only else 'all'}]"
    return forward


def kv_sites(num_layers: int) -> tuple[str, ...]:
    return tuple(block_site(l, s) for l in range(num_layers) for s in ("hook_rot_k", "hook_v"))


def stack_kv(cache: dict, num_layers: int) -> tuple[Array, Array]:
    """``[layers, B, S, n_kv, d]`` keys (after rotary) and values from a cache of ``kv_sites``."""
    k = jnp.stack([cache[block_site(l, "hook_rot_k")] for l in range(num_layers)])
    v = jnp.stack([cache[block_site(l, "hook_v")] for l in range(num_layers)])
    return k, v


def prefill(config: MistralConfig, params, tokens: Array, attention_mask: Array, cache: tuple[str, ...] = ()):
    """Run whole left-padded prompts; ``(last logits [B, V], Prefix of all their tokens, cache)``.

    Traceable (call it inside jit). The returned prefix covers every token, ``start`` = L.
    """
    forward = make_suffix_forward(config, True)
    batch, length = tokens.shape
    empty = empty_prefix(config, batch, params["embed"].dtype)
    positions = positions_from_mask(attention_mask)
    names = tuple(dict.fromkeys(kv_sites(config.num_layers) + tuple(cache)))
    logits, acts = forward(params, tokens, None, names, prefix=empty, positions=positions, attention_mask=attention_mask)
    k, v = stack_kv(acts, config.num_layers)
    prefix = Prefix(k, v, attention_mask.astype(bool), jnp.asarray(length, jnp.int32))
    return logits[:, -1], prefix, {name: acts[name] for name in cache}


def split_prefix(prefix: Prefix, suffix_len: int) -> Prefix:
    """The prefix of all but the last ``suffix_len`` tokens of a ``prefill`` prefix."""
    cut = prefix.length - suffix_len
    return Prefix(prefix.k[:, :, :cut], prefix.v[:, :, :cut], prefix.key_mask[:, :cut], jnp.asarray(cut, jnp.int32))
