"""Attribution patching: every cell of a patching sweep to first order, from one backward pass.

The effect of patching a selection S of a site is approximated by

    metric(patched) - metric(clean)  ~=  sum over S of (a_cf - a_clean) * dMetric/da |clean

The gradient comes from the hook interface itself: the clean run gets a zero-valued additive
``Patch(add=0)`` at every swept site, and ``jax.grad`` with respect to those adds is
dMetric/da at all sites at once. One forward+backward on the clean tokens, one forward on the
counterfactual ones; then each cell is a masked sum. Arguments and result shapes are those
of ``patching.patching_sweep`` (the metric must return a scalar); the result estimates
``patched - clean`` (not ``patched``): compare it with ``patching_sweep(...) - metric(clean)``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from logic_jax.interp import interventions as iv
from logic_jax.interp import patching as pt
from logic_jax.interp.hooks import Patch

Array = Any


def per_unit(site: str, delta: Array) -> Array:
    """``[B, L, H]`` (H = 1 for a headless site): ``delta`` summed over the dims a cell patches whole."""
    layout = iv.site_layout(site)
    if layout == "resid":
        return delta.reshape(delta.shape[:2] + (-1,)).sum(-1)[..., None]
    if layout == "head":
        return delta.sum(-1)
    return jnp.swapaxes(delta.sum(-1), 1, 2)  # pattern [B, H, q, k] -> [B, q, H]


@functools.partial(jax.jit, static_argnames=("forward", "plan", "metric_static", "cf_is_tokens"))
def _attribution(params, clean_tokens, cf, pos_table, head_table, metric_dynamic, forward_kwargs, *, forward, plan, metric_static, cf_is_tokens):
    metric_fn = pt.merge_static(metric_dynamic, metric_static)
    zeros = {n: jnp.zeros(s, d) for n, s, d in zip(plan.names, plan.shapes, plan.dtypes)}

    def metric_of_adds(adds):
        patches = {n: Patch(add=adds[n]) for n in plan.names}
        logits, cache = forward(params, clean_tokens, patches, plan.names, **forward_kwargs)
        value = metric_fn(logits)
        if jnp.ndim(value) != 0:
            raise ValueError(f"attribution patching needs a scalar metric, got shape {jnp.shape(value)} (use a mean)")
        return value, cache

    (_, clean_cache), grads = jax.value_and_grad(metric_of_adds, has_aux=True)(zeros)
    values = pt.cf_values(forward, params, plan, cf, cf_is_tokens, forward_kwargs)
    batch = plan.shapes[0][0]
    pos_rows = jnp.broadcast_to(pos_table, (pos_table.shape[0], batch, pos_table.shape[-1])).astype(jnp.float32)
    head_rows = head_table.astype(jnp.float32)
    per_layer = []
    for name in plan.names:
        delta = (values[name].astype(jnp.float32) - clean_cache[name].astype(jnp.float32)) * grads[name].astype(jnp.float32)
        units = per_unit(name, delta)  # [B, L, H]
        per_layer.append(jnp.einsum("bph,jbp,kh->kj", units, pos_rows, head_rows))
    cells = jnp.stack(per_layer)  # [n_layers, K, J]
    if not plan.layer_swept:  # every layer patched at once: first-order effects add up
        cells = cells.sum(0, keepdims=True)
    return pt.arrange(cells, plan)


def attribution_sweep(
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
    """First-order estimate of ``metric(patched) - metric(clean)`` for every cell, axes as ``over``."""
    forward_kwargs = dict(forward_kwargs or {})
    plan, pos_table, head_table = pt.plan_sweep(forward, params, clean_tokens, site, over, layers, positions, heads, forward_kwargs)
    cf_is_tokens = pt.check_cf(plan, cf, clean_tokens)
    metric_dynamic, metric_static = pt.split_static(metric_fn)
    return _attribution(
        params, clean_tokens, cf, pos_table, head_table, metric_dynamic, forward_kwargs,
        forward=forward, plan=plan, metric_static=metric_static, cf_is_tokens=cf_is_tokens,
    )
