"""Interventions on TransformerLens-named sites, as pure functions that build ``Patch`` dicts.

Every model exposes ``forward(params, tokens, patches=None, cache=()) -> (logits, cache)``
(see ``hooks.py``); nothing here knows which model runs. An intervention is a dict
``{site: Patch}`` handed to ``forward``; the helpers below build them:

* ``run_with_cache``: logits and the activations of any set of sites;
* ``patch_from``: a site's values from another run, at chosen positions and heads;
* ``zero_ablate``, ``mean_ablate``: replace by 0 or by a batch mean;
* ``steer``: add a vector.

Where positions and heads live, by site (batch first, as in TransformerLens):

=========  ===========================================  =============  ==========
layout     sites                                        positions      heads
=========  ===========================================  =============  ==========
"head"     hook_q, hook_k, hook_v, hook_z, hook_rot_*   axis 1         axis 2
"pattern"  hook_attn_scores, hook_pattern [B,H,q,k]     axis 2 (query) axis 1
"resid"    every other site: [B, pos, ...]              axis 1         none
=========  ===========================================  =============  ==========

``positions`` is None (every position), an int, a list/array of ints ``[n]`` shared by the
batch, an int array ``[B, n]`` per example, or a boolean mask ``[L]`` / ``[B, L]``. One
position per example, such as a batch's ``query_pos`` ``[B]``, is ``query_pos[:, None]``: a
``[B]`` array would be B positions shared by every example. Negative
ints count from the end (``-1`` is the last position). ``heads`` is None (all), an int or a
list of ints; for GQA models the heads of ``hook_k``/``hook_v`` are key/value heads.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.interp.hooks import Patch, concrete

Array = Any
Forward = Callable[..., tuple[Array, dict[str, Array]]]

HEAD_SITES = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_rot_q", "hook_rot_k")
PATTERN_SITES = ("hook_attn_scores", "hook_pattern")


# --- Site layouts ----------------------------------------------------------------------------
def site_layout(site: str) -> str:
    """``"head"``, ``"pattern"`` or ``"resid"`` (any other ``[batch, pos, ...]`` site)."""
    short = site.rsplit(".", 1)[-1]
    if short in HEAD_SITES:
        return "head"
    if short in PATTERN_SITES:
        return "pattern"
    return "resid"


def axes_of(site: str) -> tuple[int, int | None]:
    """(positions axis, heads axis or None) of a site's activation."""
    return {"head": (1, 2), "pattern": (2, 1), "resid": (1, None)}[site_layout(site)]


def check_site_ndim(site: str, shape: Sequence[int]) -> None:
    layout = site_layout(site)
    want = {"head": "== 4", "pattern": "== 4", "resid": ">= 2"}[layout]
    ok = len(shape) == 4 if layout != "resid" else len(shape) >= 2
    if not ok:
        raise ValueError(f"site {site!r} ({layout} layout) needs an activation with ndim {want}, got shape {tuple(shape)}")


def _shape_of(like: Any) -> tuple[int, ...]:
    """A shape tuple, or the shape of an array / ShapeDtypeStruct."""
    return tuple(like.shape) if hasattr(like, "shape") else tuple(like)


# --- Position and head selections as boolean tables ------------------------------------------
def position_table(site: str, positions: Any, seq_len: int, sweep: bool) -> Array:
    """Boolean ``[J, B|1, L]``: row ``j`` selects the positions of sweep cell ``j``.

    With ``sweep=False`` there is one row (J = 1): the union of the given positions.
    With ``sweep=True`` row ``j`` is the j-th position (per example for ``[B, n]`` ints).
    """
    if positions is None:
        return jnp.eye(seq_len, dtype=bool)[:, None, :] if sweep else jnp.ones((1, 1, seq_len), bool)
    if np.size(positions) == 0:
        raise ValueError(f"site {site!r}: positions is empty; pass None for every position")
    try:
        pos = jnp.asarray(positions)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"site {site!r}: positions must be ints or a boolean mask, got {positions!r:.80} ({e})") from None
    if pos.dtype == jnp.bool_:
        if sweep:
            raise ValueError(f"site {site!r}: a boolean position mask cannot be swept; pass int positions")
        if pos.ndim not in (1, 2) or pos.shape[-1] != seq_len:
            raise ValueError(f"site {site!r}: a position mask must be [L] or [B, L] with L={seq_len}, got {pos.shape}")
        return pos.reshape((1, -1 if pos.ndim == 2 else 1, seq_len))
    if not jnp.issubdtype(pos.dtype, jnp.integer):
        raise ValueError(f"site {site!r}: positions must be ints or a boolean mask, got dtype {pos.dtype}")
    if pos.ndim > 2:
        raise ValueError(f"site {site!r}: positions must be an int, [n] or [B, n], got shape {pos.shape}")
    values = concrete(pos)
    if values is not None and values.size and (values.min() < -seq_len or values.max() >= seq_len):
        raise ValueError(f"site {site!r}: positions {values.tolist()} out of range for {seq_len} positions")
    pos = jnp.where(pos < 0, pos + seq_len, pos)
    per_example = pos.ndim == 2
    pos = pos.reshape((pos.shape[0], -1) if per_example else (1, -1))  # [B|1, n]
    onehot = jax.nn.one_hot(pos, seq_len, dtype=jnp.int32) > 0  # [B|1, n, L]
    if sweep:
        return jnp.swapaxes(onehot, 0, 1)
    return onehot.any(axis=1)[None]


def head_table(site: str, heads: Any, n_heads: int | None, sweep: bool) -> Array:
    """Boolean ``[K, H]``: row ``k`` selects the heads of sweep cell ``k`` (``[1, 1]`` for a headless site)."""
    if n_heads is None:
        if heads is not None or sweep:
            raise ValueError(f"site {site!r} has no head axis ({site_layout(site)} layout); heads apply to {HEAD_SITES + PATTERN_SITES}")
        return jnp.ones((1, 1), bool)
    if heads is None:
        return jnp.eye(n_heads, dtype=bool) if sweep else jnp.ones((1, n_heads), bool)
    idx = jnp.atleast_1d(jnp.asarray(heads))
    if idx.ndim != 1 or not jnp.issubdtype(idx.dtype, jnp.integer):
        raise ValueError(f"site {site!r}: heads must be an int or a list of ints, got {heads!r}")
    values = concrete(idx)
    if values is not None and values.size and (values.min() < 0 or values.max() >= n_heads):
        raise ValueError(f"site {site!r}: heads {values.tolist()} out of range for {n_heads} heads")
    onehot = jax.nn.one_hot(idx, n_heads, dtype=jnp.int32) > 0
    return onehot if sweep else onehot.any(axis=0, keepdims=True)


def site_mask(site: str, shape: Sequence[int], pos_row: Array, head_row: Array) -> Array:
    """A boolean mask broadcastable to ``shape`` from ``pos_row [B|1, L]`` and ``head_row [H]``.

    ``head_row`` is ignored for a headless ("resid") site.
    """
    check_site_ndim(site, shape)
    pos_axis, head_axis = axes_of(site)
    batch, seq_len = shape[0], shape[pos_axis]
    if pos_row.shape[-1] != seq_len or pos_row.shape[0] not in (1, batch):
        raise ValueError(f"site {site!r}: positions [{pos_row.shape[0]}, {pos_row.shape[-1]}] do not fit activation shape {tuple(shape)}")
    layout = site_layout(site)
    if layout == "resid":
        return pos_row.reshape(pos_row.shape + (1,) * (len(shape) - 2))
    if head_row.shape[-1] != shape[head_axis]:
        raise ValueError(f"site {site!r}: {head_row.shape[-1]} heads selected for an activation with {shape[head_axis]} heads (shape {tuple(shape)})")
    if layout == "head":
        return pos_row[:, :, None, None] & head_row[None, None, :, None]
    return head_row[None, :, None, None] & pos_row[:, None, :, None]


def selection_mask(site: str, like: Any, positions: Any = None, heads: Any = None) -> Array:
    """The mask of ``positions`` x ``heads`` for a site, broadcastable to its activation ``like``."""
    shape = _shape_of(like)
    check_site_ndim(site, shape)
    pos_axis, head_axis = axes_of(site)
    pos = position_table(site, positions, shape[pos_axis], sweep=False)[0]
    head = head_table(site, heads, None if head_axis is None else shape[head_axis], sweep=False)[0]
    return site_mask(site, shape, pos, head)


# --- Running and caching -----------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def jit_forward(forward: Forward) -> Forward:
    """``forward`` compiled once (``cache`` static); the same function object reuses the compilation."""
    return jax.jit(forward, static_argnames=("cache",))


def run_with_cache(forward: Forward, params: Any, tokens: Array, sites: Iterable[str], patches: Mapping[str, Patch] | None = None, **forward_kwargs) -> tuple[Array, dict[str, Array]]:
    """``(logits [B, L, V], {site: activation})`` of one (optionally patched) run, jit-compiled.

    The model raises a KeyError naming any site it does not have.
    """
    return jit_forward(forward)(params, tokens, patches, cache=site_tuple(sites), **forward_kwargs)


def site_tuple(sites: Iterable[str] | str) -> tuple[str, ...]:
    """Site names as a tuple; one name given as a string is one site (not its characters)."""
    return (sites,) if isinstance(sites, str) else tuple(sites)


def site_shapes(forward: Forward, params: Any, tokens: Array, sites: Iterable[str], **forward_kwargs) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of the sites' activations, by tracing only (no compute)."""
    sites = site_tuple(sites)
    _, cache = jax.eval_shape(lambda p, t, kw: forward(p, t, None, sites, **kw), params, tokens, forward_kwargs)
    missing = [s for s in sites if s not in cache]
    if missing:  # a model that does not check site names itself
        raise KeyError(f"the model did not cache site(s) {missing}; is the name right?")
    return cache


# --- Patch builders ----------------------------------------------------------------------------
def patch_from(cache: Mapping[str, Array], site: str, positions: Any = None, heads: Any = None) -> dict[str, Patch]:
    """``{site: Patch}`` writing ``cache[site]`` (another run's values) at ``positions`` x ``heads``."""
    if site not in cache:
        raise KeyError(f"site {site!r} is not in the cache (cached: {sorted(cache)}); run_with_cache it first")
    value = cache[site]
    return {site: Patch(value=value, mask=selection_mask(site, value, positions, heads))}


def zero_ablate(site: str, like: Any, positions: Any = None, heads: Any = None) -> dict[str, Patch]:
    """``{site: Patch}`` setting the selection to 0; ``like`` is the activation or its shape."""
    return {site: Patch(value=jnp.zeros(()), mask=selection_mask(site, like, positions, heads))}


def mean_ablate(cache: Mapping[str, Array], site: str, positions: Any = None, heads: Any = None) -> dict[str, Patch]:
    """``{site: Patch}`` replacing the selection by the mean over the batch of ``cache[site]``.

    The mean keeps the position (and head) axes: position ``p`` gets the mean activation at
    ``p``. The patched batch may differ in size from the cache's batch.
    """
    if site not in cache:
        raise KeyError(f"site {site!r} is not in the cache (cached: {sorted(cache)}); run_with_cache it first")
    if np.shape(cache[site])[0] == 0:
        raise ValueError(f"the cache of {site!r} holds no examples (batch 0): no mean to ablate with")
    mean = jnp.mean(cache[site], axis=0, keepdims=True)
    # Positions per example ([B, n] ints or a [B, L] mask) select within the patched batch of B.
    shape = mean.shape if positions is None or np.ndim(positions) < 2 else (np.shape(positions)[0],) + mean.shape[1:]
    return {site: Patch(value=mean, mask=selection_mask(site, shape, positions, heads))}


def steer(site: str, vector: Array, like: Any, positions: Any = None, heads: Any = None, scale: float = 1.0) -> dict[str, Patch]:
    """``{site: Patch}`` adding ``scale * vector`` at ``positions`` (and ``heads``).

    ``vector`` broadcasts against the activation's trailing axes: ``[d_model]`` for a resid
    site, ``[d_head]`` or ``[n_heads, d_head]`` for a head site. ``like``: activation or shape.
    """
    shape = _shape_of(like)
    mask = selection_mask(site, shape, positions, heads)
    vector = jnp.asarray(vector)
    try:
        jnp.broadcast_shapes(vector.shape, shape)
    except ValueError:
        raise ValueError(f"site {site!r}: steering vector of shape {vector.shape} does not broadcast to activation shape {shape}") from None
    return {site: Patch(add=jnp.where(mask, scale * vector, 0.0))}


def merge_patches(*patch_dicts: Mapping[str, Patch]) -> dict[str, Patch]:
    """One patches dict from several; two interventions on one site are an error naming it."""
    merged: dict[str, Patch] = {}
    for patches in patch_dicts:
        for site, patch in patches.items():
            if site in merged:
                raise ValueError(f"site {site!r} is patched twice; compose the two interventions into one Patch")
            merged[site] = patch
    return merged
