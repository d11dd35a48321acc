"""Activation-patching sweeps: every (layer, head, position) cell in ONE vmapped, compiled call.

``patching_sweep`` runs the clean tokens once per sweep cell with that cell's activations
replaced by the counterfactual run's, and returns the metric per cell:

    over=("layer", "head")          -> [n_layers, n_heads]   (patched at ``positions``)
    over=("layer", "pos")           -> [n_layers, n_positions]
    over=("layer", "head", "pos")   -> [n_layers, n_heads, n_positions]

(any subset and order of "layer", "head", "pos"; the result's axes follow ``over``, then the
metric's own axes). How it is one call: the patches dict holds every layer's counterfactual
activation, and each cell only changes the boolean masks, ``(layer == l) & (head == h) &
(pos == p)``; ``jax.vmap`` over the cell index then batches all the patched runs, and
``chunk_size`` bounds memory (``lax.map`` over chunks of cells, for a 7B model). For a layer
sweep of a model with ``hook_resid_pre`` (and at most ``MAX_SHARED_LAYERS`` layers), the call
instead holds one vmapped program per layer that starts from the clean residual stream at that
layer (``share_upstream``): the blocks before the patch are not recomputed per cell.

``patch_sweep_loop`` is the same sweep as a Python loop of single patched runs (the
benchmark baseline and the tests' oracle). ``attribution.py`` gives the gradient screen with
the same arguments and result shapes.

Arguments shared by the sweeps:

* ``site``: a per-block site (``"hook_z"``, ``"hook_resid_pre"``, ... expanded over ``layers``),
  one full site name (``"hook_embed"``), or a list of full names (the "layer" axis indexes it);
* ``cf``: the counterfactual tokens ``[B, L]`` (run once to cache the sites), or a dict
  ``{site: values}`` broadcasting to the activations (a cache, zeros, means: an ablation sweep);
* ``metric_fn(logits) -> array`` (a scalar for attribution): a plain function, or a pytree
  callable such as ``metrics.LogitDiff`` whose arrays enter the compiled call as data, so one
  compilation serves every batch of the same shape;
* ``positions`` / ``heads``: as in ``interventions.py``; the swept cells when "pos" / "head" is
  in ``over``, else the fixed selection patched in every cell (default: all).
* ``forward_kwargs``: extra keyword arrays of ``forward`` (e.g. Mistral's ``attention_mask``),
  used for the clean and the counterfactual run.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.interp import interventions as iv
from logic_jax.interp.hooks import ATTN_SITES, BLOCK_SITES, ROTARY_SITES, Patch, block_site

Array = Any
SWEEP_AXES = ("layer", "head", "pos")
MAX_SHARED_LAYERS = 8  # share_upstream=None: one program per layer up to this many layers


# --- Host-side preparation, shared with attribution.py -----------------------------------------
@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """The static part of a sweep (hashable: a jit static argument)."""

    names: tuple[str, ...]  # full site names; the "layer" axis indexes them
    shapes: tuple[tuple[int, ...], ...]  # activation shape of each name
    dtypes: tuple[Any, ...]
    over: tuple[str, ...]
    upstream: tuple[str, ...] | None = None  # hook_resid_pre of each name's block, when shared

    @property
    def layer_swept(self) -> bool:
        return "layer" in self.over


def _site_names(site: str | Sequence[str], layers: int | Sequence[int] | None) -> tuple[str, ...]:
    if not isinstance(site, str):
        if layers is not None:
            raise ValueError(f"site is a list of full names {list(site)}; pass layers=None")
        return tuple(site)
    if site in BLOCK_SITES + ATTN_SITES + ROTARY_SITES:
        if layers is None:
            raise ValueError(f"per-block site {site!r} needs layers (the number of layers, or a list of layer indices)")
        layer_ids = range(layers) if isinstance(layers, int) and not isinstance(layers, bool) else layers
        if isinstance(layer_ids, bool) or not all(isinstance(l, (int, np.integer)) and not isinstance(l, bool) for l in layer_ids):
            raise ValueError(f"layers must be the number of layers or a list of layer indices (ints), got {layers!r}")
        return tuple(block_site(int(l), site) for l in layer_ids)
    if layers is not None:
        raise ValueError(f"site {site!r} is a full site name, not a per-block one {BLOCK_SITES + ATTN_SITES}; pass layers=None")
    return (site,)


def _block_of(name: str) -> int | None:
    match = re.match(r"blocks\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def _upstream_sites(forward, params, clean_tokens, names, over, share_upstream, forward_kwargs) -> tuple[str, ...] | None:
    """``blocks.{l}.hook_resid_pre`` of each swept site's block, if the sweep shares the upstream."""
    if share_upstream is False or "layer" not in over:
        return None
    if share_upstream is None and len(names) > MAX_SHARED_LAYERS:
        return None
    blocks = [_block_of(n) for n in names]
    if None in blocks:
        if share_upstream:
            raise ValueError(f"share_upstream=True needs per-block sites (blocks.<l>....), got {list(names)}")
        return None
    upstream = tuple(block_site(l, "hook_resid_pre") for l in blocks)
    try:
        iv.site_shapes(forward, params, clean_tokens, upstream, **forward_kwargs)
    except KeyError:
        if share_upstream:
            raise
        return None
    return upstream


def plan_sweep(forward, params, clean_tokens, site, over, layers, positions, heads, forward_kwargs, share_upstream=False):
    """``(SweepPlan, pos_table [J, B|1, L], head_table [K, H])`` after checking every argument."""
    over = tuple(over)
    bad = [a for a in over if a not in SWEEP_AXES] + [a for a in set(over) if over.count(a) > 1]
    if bad:
        raise ValueError(f"over={over}: each entry must be one of {SWEEP_AXES}, at most once")
    names = _site_names(site, layers)
    if not names:
        raise ValueError("no sites to patch (empty layers or site list)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # patches are keyed by site: a repeat would patch only once, in the last cell
        raise ValueError(f"sites {repeated} appear more than once in the sweep; list each site once")
    shapes = iv.site_shapes(forward, params, clean_tokens, names, **forward_kwargs)
    first = names[0]
    pos_axis, head_axis = iv.axes_of(first)
    ref = shapes[first].shape
    for name in names:
        iv.check_site_ndim(name, shapes[name].shape)
        shape = shapes[name].shape
        if iv.axes_of(name) != (pos_axis, head_axis) or shape[pos_axis] != ref[pos_axis] or (head_axis is not None and shape[head_axis] != ref[head_axis]):
            raise ValueError(f"sites {first!r} {tuple(ref)} and {name!r} {tuple(shape)} differ in layout or in positions/heads; sweep them separately")
    pos_table = iv.position_table(first, positions, ref[pos_axis], sweep="pos" in over)
    head_table = iv.head_table(first, heads, None if head_axis is None else ref[head_axis], sweep="head" in over)
    upstream = _upstream_sites(forward, params, clean_tokens, names, over, share_upstream, forward_kwargs)
    plan = SweepPlan(names, tuple(tuple(shapes[n].shape) for n in names), tuple(shapes[n].dtype for n in names), over, upstream)
    return plan, pos_table, head_table


def check_cf(plan: SweepPlan, cf: Any, clean_tokens: Array) -> bool:
    """True when ``cf`` is tokens (to run), False for a dict of values; errors name the site."""
    if isinstance(cf, Mapping):
        for name, shape in zip(plan.names, plan.shapes):
            if name not in cf:
                raise KeyError(f"counterfactual values lack site {name!r} (given: {sorted(cf)})")
            try:
                jnp.broadcast_shapes(jnp.shape(cf[name]), shape)
            except ValueError:
                raise ValueError(f"counterfactual values of site {name!r} have shape {jnp.shape(cf[name])}, which does not broadcast to {shape}") from None
        return False
    if jnp.shape(cf) != jnp.shape(clean_tokens):
        raise ValueError(f"counterfactual tokens {jnp.shape(cf)} and clean tokens {jnp.shape(clean_tokens)} must have the same shape (positions are patched one to one)")
    return True


def cf_values(forward, params, plan: SweepPlan, cf: Any, cf_is_tokens: bool, forward_kwargs) -> dict[str, Array]:
    """The counterfactual activation of every planned site (runs the cf tokens when given)."""
    if cf_is_tokens:
        _, cache = forward(params, cf, None, plan.names, **forward_kwargs)
        return cache
    return {name: jnp.asarray(cf[name]) for name in plan.names}


def split_static(tree: Any) -> tuple[list, tuple]:
    """Split a pytree (e.g. a metric) into array leaves (data) and a hashable static rest."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    is_array = tuple(isinstance(x, (jax.Array, np.ndarray)) for x in leaves)
    dynamic = [x if a else None for x, a in zip(leaves, is_array)]
    static = tuple(None if a else x for x, a in zip(leaves, is_array))
    return dynamic, (treedef, is_array, static)


def merge_static(dynamic: list, static: tuple) -> Any:
    treedef, is_array, static_leaves = static
    leaves = [d if a else s for d, a, s in zip(dynamic, is_array, static_leaves)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def arrange(cells: Array, plan: SweepPlan) -> Array:
    """``[n_layer_cells, K, J, ...]`` -> axes in the order of ``plan.over`` (unswept axes dropped)."""
    grid_axes = ("layer", "head", "pos")
    keep = [i for i, a in enumerate(grid_axes) if a in plan.over]
    drop = tuple(i for i in range(3) if i not in keep)
    cells = jnp.squeeze(cells, axis=drop) if drop else cells
    order = [keep.index(grid_axes.index(a)) for a in plan.over]
    return jnp.transpose(cells, order + list(range(len(order), cells.ndim)))


def cell_patches(plan: SweepPlan, values: Mapping[str, Array], pos_row: Array, head_row: Array, layer: Array | None) -> dict[str, Patch]:
    """Patches of one cell: every planned site, masked to ``layer`` (None: all layers)."""
    patches = {}
    for i, (name, shape) in enumerate(zip(plan.names, plan.shapes)):
        mask = iv.site_mask(name, shape, pos_row, head_row)
        if layer is not None:
            mask = mask & (layer == i)
        patches[name] = Patch(value=values[name], mask=mask)
    return patches


# --- The vmapped sweep -------------------------------------------------------------------------
def _map_cells(one_cell: Callable, cells: tuple[Array, ...], chunk_size: int | None) -> Array:
    """``one_cell`` over the cells, all at once (vmap) or ``chunk_size`` at a time."""
    return jax.vmap(one_cell)(cells) if chunk_size is None else jax.lax.map(one_cell, cells, batch_size=chunk_size)


def _cells_sharing_upstream(forward, params, clean_tokens, values, pos_table, head_table, metric_fn, forward_kwargs, plan, chunk_size):
    """``[n_layers * K * J, ...]``: one vmapped program per swept layer, all in the one compiled call.

    Layer ``l``'s program replaces ``blocks.{l}.hook_resid_pre`` by the clean run's value, so
    XLA drops the blocks before ``l``, and the patched block's work before the patched site
    stays unbatched (vmap batches only what depends on the cell).
    """
    _, clean_resid = forward(params, clean_tokens, None, tuple(sorted(set(plan.upstream))), **forward_kwargs)
    grid = jnp.meshgrid(jnp.arange(head_table.shape[0]), jnp.arange(pos_table.shape[0]), indexing="ij")
    cells = tuple(g.reshape(-1) for g in grid)
    out = []
    for name, shape, resid in zip(plan.names, plan.shapes, plan.upstream):

        def one_cell(cell, name=name, shape=shape, resid=resid):
            k, j = cell
            mask = iv.site_mask(name, shape, pos_table[j], head_table[k])
            if resid == name:  # the swept site is the cut itself
                patches = {name: Patch(value=jnp.where(mask, values[name], clean_resid[name]))}
            else:
                patches = {resid: Patch(value=clean_resid[resid]), name: Patch(value=values[name], mask=mask)}
            logits, _ = forward(params, clean_tokens, patches, (), **forward_kwargs)
            return metric_fn(logits)

        out.append(_map_cells(one_cell, cells, chunk_size))
    return jnp.concatenate(out)


@functools.partial(jax.jit, static_argnames=("forward", "plan", "metric_static", "cf_is_tokens", "chunk_size"))
def _sweep(params, clean_tokens, cf, pos_table, head_table, metric_dynamic, forward_kwargs, *, forward, plan, metric_static, cf_is_tokens, chunk_size):
    metric_fn = merge_static(metric_dynamic, metric_static)
    values = cf_values(forward, params, plan, cf, cf_is_tokens, forward_kwargs)
    n_layer_cells = len(plan.names) if plan.layer_swept else 1
    if plan.upstream is not None:
        out = _cells_sharing_upstream(forward, params, clean_tokens, values, pos_table, head_table, metric_fn, forward_kwargs, plan, chunk_size)
    else:
        # One program for every cell: the layer is data, a one-hot factor of every layer's mask.
        grid = jnp.meshgrid(jnp.arange(n_layer_cells), jnp.arange(head_table.shape[0]), jnp.arange(pos_table.shape[0]), indexing="ij")

        def one_cell(cell):
            layer, k, j = cell
            patches = cell_patches(plan, values, pos_table[j], head_table[k], layer if plan.layer_swept else None)
            logits, _ = forward(params, clean_tokens, patches, (), **forward_kwargs)
            return metric_fn(logits)

        out = _map_cells(one_cell, tuple(g.reshape(-1) for g in grid), chunk_size)
    out = out.reshape((n_layer_cells, head_table.shape[0], pos_table.shape[0]) + out.shape[1:])
    return arrange(out, plan)


def patching_sweep(
    forward: Callable,
    params: Any,
    clean_tokens: Array,
    cf: Array | Mapping[str, Array],
    metric_fn: Callable[[Array], Array],
    site: str | Sequence[str],
    over: Sequence[str] = ("layer", "head"),
    *,
    layers: int | Sequence[int] | None = None,
    positions: Any = None,
    heads: Any = None,
    chunk_size: int | None = None,
    forward_kwargs: Mapping[str, Array] | None = None,
    share_upstream: bool | None = None,
) -> Array:
    """The metric of the clean run patched cell by cell with ``cf``, axes as ``over`` (see module doc).

    One compiled call; it compiles once per (forward, metric's static part, sites, shapes),
    so a ``LogitDiff`` metric reuses the compilation across batches. ``chunk_size`` cells
    run together (None: all at once).

    ``share_upstream`` (layer sweeps of per-block sites): compile one vmapped program per
    swept layer, in which the blocks before it are not computed (``blocks.{l}.hook_resid_pre``
    takes the clean run's value, cached once) and the patched block's work before the patched
    site is not batched over cells. Faster (the blocks before the patch are skipped), but the
    compiled program grows with the number of layers. It assumes ``hook_resid_pre`` carries all
    the state a block receives (true of GPT-2 and Mistral blocks). None (default): on when the
    model has ``hook_resid_pre`` and at most ``MAX_SHARED_LAYERS`` layers are swept.
    """
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None (every cell at once) or an int >= 1, got {chunk_size!r}")
    forward_kwargs = dict(forward_kwargs or {})
    plan, pos_table, head_table = plan_sweep(forward, params, clean_tokens, site, over, layers, positions, heads, forward_kwargs, share_upstream)
    cf_is_tokens = check_cf(plan, cf, clean_tokens)
    metric_dynamic, metric_static = split_static(metric_fn)
    return _sweep(
        params, clean_tokens, cf, pos_table, head_table, metric_dynamic, forward_kwargs,
        forward=forward, plan=plan, metric_static=metric_static, cf_is_tokens=cf_is_tokens, chunk_size=chunk_size,
    )


# --- The Python loop of single patched runs ------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("forward", "plan", "metric_static"))
def _patched_metric(params, clean_tokens, values, pos_row, head_row, metric_dynamic, forward_kwargs, *, forward, plan, metric_static):
    """One patched run of every site in ``plan`` (compiled once per site set and shape)."""
    metric_fn = merge_static(metric_dynamic, metric_static)
    logits, _ = forward(params, clean_tokens, cell_patches(plan, values, pos_row, head_row, None), (), **forward_kwargs)
    return metric_fn(logits)


def patch_sweep_loop(
    forward: Callable,
    params: Any,
    clean_tokens: Array,
    cf: Array | Mapping[str, Array],
    metric_fn: Callable[[Array], Array],
    site: str | Sequence[str],
    over: Sequence[str] = ("layer", "head"),
    *,
    layers: int | Sequence[int] | None = None,
    positions: Any = None,
    heads: Any = None,
    forward_kwargs: Mapping[str, Array] | None = None,
) -> Array:
    """``patching_sweep`` as a Python loop of single patched runs: one jitted call per cell."""
    forward_kwargs = dict(forward_kwargs or {})
    plan, pos_table, head_table = plan_sweep(forward, params, clean_tokens, site, over, layers, positions, heads, forward_kwargs)
    cf_is_tokens = check_cf(plan, cf, clean_tokens)
    if cf_is_tokens:
        _, values = iv.run_with_cache(forward, params, cf, plan.names, **forward_kwargs)
    else:
        values = cf_values(forward, params, plan, cf, False, forward_kwargs)
    metric_dynamic, metric_static = split_static(metric_fn)
    # Each cell patches one layer's site (or all of them when "layer" is not swept).
    layer_plans = [dataclasses.replace(plan, names=(n,), shapes=(s,), dtypes=(d,)) for n, s, d in zip(plan.names, plan.shapes, plan.dtypes)] if plan.layer_swept else [plan]
    out = []
    for layer_plan in layer_plans:
        layer_values = {n: values[n] for n in layer_plan.names}
        for k in range(head_table.shape[0]):
            for j in range(pos_table.shape[0]):
                out.append(_patched_metric(
                    params, clean_tokens, layer_values, pos_table[j], head_table[k], metric_dynamic, forward_kwargs,
                    forward=forward, plan=layer_plan, metric_static=metric_static,
                ))
    out = jnp.stack(out)
    out = out.reshape((len(layer_plans), head_table.shape[0], pos_table.shape[0]) + out.shape[1:])
    return arrange(out, plan)


# --- Convenience: the normalised effect of paper.md ----------------------------------------------
def patching_effects(forward, params, clean_tokens, cf_tokens, metric_fn, site, over=("layer", "head"), **kwargs) -> dict[str, Array]:
    """``{"effect", "patched", "clean", "cf"}``: the sweep, the two unpatched metrics and
    ``(patched - clean) / (cf - clean)`` (0 no effect, 1 a full flip). ``kwargs`` as ``patching_sweep``.
    """
    from logic_jax.interp.metrics import normalized_effect

    forward_kwargs = dict(kwargs.get("forward_kwargs") or {})
    patched = patching_sweep(forward, params, clean_tokens, cf_tokens, metric_fn, site, over, **kwargs)
    clean = metric_fn(iv.run_with_cache(forward, params, clean_tokens, (), **forward_kwargs)[0])
    cf = metric_fn(iv.run_with_cache(forward, params, cf_tokens, (), **forward_kwargs)[0])
    return dict(effect=normalized_effect(patched, clean, cf), patched=patched, clean=clean, cf=cf)
