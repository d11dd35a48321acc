"""Attention of chosen heads over the question's token spans, from QUERY and from the last position.

For each head and each of the two query rows (QUERY, the last token), the share of its
attention on each span of ``tokens.SPANS`` (the queried rule, its conclusion letter, its first
letter, QUERY, the Facts section, the correct fact, its letter), and its largest and
second-largest single weights (paper.md: "about 10x its next weight"), averaged over the clean
prompts of the pairs. The patterns come from the clean run's ``hook_pattern`` at the last P
positions (``sweeps.prepare`` caches them), so QUERY must be among those positions.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.interp.hooks import block_site
from logic_jax.llm.batches import PairBatch
from logic_jax.llm.tokens import SPANS

ROWS = ("query", "last")


def pattern_sites(heads: Sequence[tuple[int, int]]) -> tuple[str, ...]:
    return tuple(block_site(l, "hook_pattern") for l in sorted({l for l, _ in heads}))


@functools.partial(jax.jit, static_argnames=("heads",))
def _sums(patterns: dict, batch: PairBatch, heads: tuple[tuple[int, int], ...]) -> dict:
    length = batch.clean.shape[1]
    positions = next(iter(patterns.values())).shape[2]
    query_row = batch.query_index - (length - positions)  # [B]
    rows = jnp.stack([query_row, jnp.full_like(query_row, positions - 1)], axis=1)  # [B, 2]
    per_head = []
    for layer, head in heads:
        pattern = patterns[block_site(layer, "hook_pattern")][:, head].astype(jnp.float32)  # [B, P, L]
        per_head.append(jnp.take_along_axis(pattern, rows[:, :, None], axis=1))  # [B, 2, L]
    weights = jnp.stack(per_head, axis=1)  # [B, heads, 2, L]
    spans = jnp.einsum("bhrl,bsl->bhrs", weights, batch.spans.astype(jnp.float32))
    top = jax.lax.top_k(weights, 2)[0]  # [B, heads, 2, 2]
    w = batch.weight[:, None, None, None]
    return {"spans": jnp.sum(w * spans, 0), "top": jnp.sum(w * top, 0)}


def attention_sums(patterns: dict, batch: PairBatch, heads: Sequence[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Weighted sums over the batch: ``spans [heads, 2 rows, n_spans]``, ``top [heads, 2 rows, 2]``."""
    out = _sums(patterns, batch, tuple(tuple(h) for h in heads))
    return {k: np.asarray(jax.device_get(v), np.float64) for k, v in out.items()}


def summarize(sums: dict[str, np.ndarray], count: float, heads: Sequence[tuple[int, int]]) -> dict:
    """``{"L.H": {"query": {span: share, ..., "top1", "top2"}, "last": {...}}}`` (means over pairs)."""
    out = {}
    for i, (layer, head) in enumerate(heads):
        out[f"{layer}.{head}"] = {
            row: {
                **{span: float(sums["spans"][i, r, s] / count) for s, span in enumerate(SPANS)},
                "top1": float(sums["top"][i, r, 0] / count),
                "top2": float(sums["top"][i, r, 1] / count),
            }
            for r, row in enumerate(ROWS)
        }
    return out
