"""Test-only models for the interpretability toolkit, following the shared forward interface.

``attn_only``: an attention-only transformer with grouped-query attention and no LayerNorm,
as a pure function over a params dict. Without LayerNorm or MLP the logits are exactly linear
in the last layer's ``hook_v``, ``hook_pattern``, ``hook_z``, ``hook_attn_out`` and
``hook_resid_post``, so attribution patching is exact there; and ``hook_k``/``hook_v`` have
fewer heads than ``hook_q``/``hook_z``, as in Mistral.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from logic_jax.interp.hooks import Hooks, block_site
from logic_jax.problem import format as fmt


@dataclasses.dataclass(frozen=True)
class AttnOnlyConfig:
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    d_model: int = 16
    d_head: int = 4
    vocab_size: int = fmt.VOCAB_SIZE
    max_len: int = fmt.seq_len(3)


def attn_only_sites(cfg: AttnOnlyConfig) -> tuple[str, ...]:
    per_block = ("hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_post")
    names = ["hook_embed", "hook_pos_embed"]
    for layer in range(cfg.n_layers):
        names += [block_site(layer, s.split(".")[-1]) for s in per_block]
    return tuple(names)


def attn_only_params(key: jax.Array, cfg: AttnOnlyConfig, std: float = 0.5) -> dict:
    keys = iter(jax.random.split(key, 3 + 4 * cfg.n_layers))
    normal = lambda shape, s=std: s * jax.random.normal(next(keys), shape)  # noqa: E731
    d, h, kv, e = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head
    return dict(
        W_E=normal((cfg.vocab_size, d)),
        W_pos=normal((cfg.max_len, d)),
        W_U=normal((d, cfg.vocab_size)),
        blocks=[dict(W_Q=normal((d, h, e)), W_K=normal((d, kv, e)), W_V=normal((d, kv, e)), W_O=normal((h, e, d))) for _ in range(cfg.n_layers)],
    )


def make_attn_only_forward(cfg: AttnOnlyConfig):
    """``forward(params, tokens, patches=None, cache=()) -> (logits, {site: activation})``."""
    known = attn_only_sites(cfg)
    group = cfg.n_heads // cfg.n_kv_heads

    def forward(params, tokens, patches=None, cache=()):
        hooks = Hooks(patches, cache, known=known)
        length = tokens.shape[1]
        embed = hooks("hook_embed", params["W_E"][tokens])
        x = embed + hooks("hook_pos_embed", jnp.broadcast_to(params["W_pos"][:length], embed.shape))
        causal = jnp.tril(jnp.ones((length, length), bool))
        for layer, w in enumerate(params["blocks"]):
            site = lambda name, value: hooks(block_site(layer, name), value)  # noqa: E731
            x = site("hook_resid_pre", x)
            q = site("hook_q", jnp.einsum("bpd,dhe->bphe", x, w["W_Q"]))
            k = site("hook_k", jnp.einsum("bpd,dhe->bphe", x, w["W_K"]))
            v = site("hook_v", jnp.einsum("bpd,dhe->bphe", x, w["W_V"]))
            k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
            scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) / jnp.sqrt(cfg.d_head)
            scores = site("hook_attn_scores", jnp.where(causal, scores, -1e9))
            pattern = site("hook_pattern", jax.nn.softmax(scores, axis=-1))
            z = site("hook_z", jnp.einsum("bhqk,bkhe->bqhe", pattern, v))
            attn_out = site("hook_attn_out", jnp.einsum("bqhe,hed->bqd", z, w["W_O"]))
            x = site("hook_resid_post", x + attn_out)
        return x @ params["W_U"], hooks.cache

    return forward
