"""Claim 2, the routing signal: the layer-2 attention output at QUERY, clustered by queried chain.

The vectors are ``blocks.{route}.hook_attn_out`` at QUERY (route = 1 for the paper's 3-layer
model). Their pairwise cosine similarities should form two clusters, LogOp-queried vs
linear-queried, with a weaker OR/AND sub-structure inside the LogOp cluster. Scores:

* ``separation`` = mean within-group cosine - mean between-group cosine. The within-group mean
  averages each group's mean over its pairs i != j (groups weigh equally whatever their size);
  the between-group mean is over all pairs from different groups. 0: no structure; up to 2.
* ``silhouette``: the mean silhouette coefficient with cosine distance 1 - cos, s(i) =
  (b(i) - a(i)) / max(a(i), b(i)), a(i) the mean distance to i's own group (others), b(i)
  to the other group. In [-1, 1]; 1 is tight, well-apart clusters, 0 overlapping ones.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from logic_jax.analysis import common
from logic_jax.interp.hooks import block_site
from logic_jax.problem.sampler import Batch


@functools.partial(jax.jit, static_argnames=("forward", "layer", "site"))
def _vectors(params, tokens, query_pos, *, forward, layer, site):
    name = block_site(layer, site)
    _, cache = forward(params, tokens, None, (name,))
    return cache[name][jax.numpy.arange(tokens.shape[0]), query_pos]


def routing_vectors(forward, params, batch: Batch, layer: int, site: str = "hook_attn_out", chunk: int = 1024) -> np.ndarray:
    """``[B, d_model]``: ``blocks.{layer}.{site}`` at each problem's QUERY position."""
    fn = functools.partial(_vectors, forward=forward, layer=layer, site=site)
    return common.map_chunks(fn, params, [common.context(batch), batch.query_pos], chunk)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """``[B, B]`` pairwise cosine similarities (a zero vector has cosine 0 with everything)."""
    v = np.asarray(vectors, np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    unit = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    return unit @ unit.T


def _check_groups(cos: np.ndarray, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if cos.shape != (labels.size, labels.size):
        raise common.AnalysisError(f"cosine matrix {cos.shape} does not match {labels.size} labels")
    groups = np.unique(labels)
    sizes = [int((labels == g).sum()) for g in groups]
    if len(groups) < 2 or min(sizes) < 2:
        raise common.AnalysisError(f"separation needs at least 2 groups of at least 2 problems; group sizes {dict(zip(groups.tolist(), sizes))}")
    return labels


def within_between(cos: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean within-group cosine, groups weighted equally; mean between-group cosine)."""
    labels = _check_groups(cos, labels)
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(labels.size, dtype=bool)
    within = [cos[np.ix_(labels == g, labels == g)][off[np.ix_(labels == g, labels == g)]].mean() for g in np.unique(labels)]
    return float(np.mean(within)), float(cos[~same].mean())


def separation(cos: np.ndarray, labels: np.ndarray) -> float:
    """Mean within-group minus mean between-group cosine (module doc)."""
    within, between = within_between(cos, labels)
    return within - between


def silhouette(cos: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient with cosine distance (module doc)."""
    labels = _check_groups(cos, labels)
    dist = 1.0 - cos
    n = labels.size
    groups = np.unique(labels)
    member = labels[None, :] == groups[:, None]  # [G, B]
    sums = dist @ member.T.astype(np.float64)  # [B, G]: distance sum to each group
    sizes = member.sum(1)
    own = np.searchsorted(groups, labels)
    rows = np.arange(n)
    a = (sums[rows, own] - dist[rows, rows]) / (sizes[own] - 1)  # excluding i itself
    others = sums / sizes[None, :]
    others[rows, own] = np.inf
    b = others.min(1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
    return float(s.mean())


def scores(vectors: np.ndarray, query_logop: np.ndarray, is_and: np.ndarray) -> dict:
    """Claim 2's numbers: chain (LogOp vs linear) and operator (OR vs AND, LogOp queries only) scores."""
    query_logop, is_and = np.asarray(query_logop, bool), np.asarray(is_and, bool)
    cos = cosine_matrix(vectors)
    within, between = within_between(cos, query_logop)
    out = dict(
        chain_within=within,
        chain_between=between,
        chain_separation=within - between,
        chain_silhouette=silhouette(cos, query_logop),
        n=int(query_logop.size),
    )
    logop = np.flatnonzero(query_logop)
    ops = is_and[logop]
    if min(ops.sum(), (~ops).sum()) >= 2:
        sub = cos[np.ix_(logop, logop)]
        out.update(op_separation=separation(sub, ops), op_silhouette=silhouette(sub, ops))
    else:
        out.update(op_separation=None, op_silhouette=None)
    return out


def display_order(query_logop: np.ndarray, is_and: np.ndarray, limit: int | None = None) -> np.ndarray:
    """Row order for the figure: linear, then LogOp-OR, then LogOp-AND (at most ``limit`` rows, groups in proportion)."""
    query_logop, is_and = np.asarray(query_logop, bool), np.asarray(is_and, bool)
    groups = [np.flatnonzero(~query_logop), np.flatnonzero(query_logop & ~is_and), np.flatnonzero(query_logop & is_and)]
    if limit is not None and query_logop.size > limit:
        groups = [g[: max(1, round(limit * g.size / query_logop.size))] if g.size else g for g in groups]
    return np.concatenate(groups)
