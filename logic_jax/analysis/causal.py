"""Causal tests: patch the routing signal, ablate heads, patching heatmaps (one seed).

* ``route_patch``: the routing signal (``blocks.{route}.hook_attn_out`` at QUERY) of a
  linear-queried problem written into the same problem queried on the LogOp chain (a
  query-switch pair, so the letters agree), and back. Measured in the recipient: the reading
  layer's attention from ANSWER onto QUERY per head, the predicted first token (does it become
  the donor's?) and the logit difference LD = logit(recipient's first token) - logit(donor's),
  normalised as paper.md: (LD_patched - LD_recipient) / (LD_donor - LD_recipient).
* ``head_ablation``: each (layer, head)'s ``hook_z`` replaced by its mean over the problems at
  every position; metric: the first-token margin (logit of the correct first token minus the
  largest other logit, at ANSWER) and first-token accuracy, per query type.
* ``patching_maps``: paper.md's normalised patching effect on the first-token LD for
  counterfactual pairs (``interp.pairs``), per (layer, head) of ``hook_z`` (all positions) and
  per (layer, position) of ``hook_resid_pre``.

Sweeps go through ``interp.patching`` (one vmapped call each).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.analysis import common
from logic_jax.interp import interventions as iv
from logic_jax.interp import pairs as pairs_lib
from logic_jax.interp.hooks import block_site
from logic_jax.interp.metrics import effect_defined, normalized_effect
from logic_jax.interp.patching import patching_effects, patching_sweep
from logic_jax.problem.sampler import Batch

DIRECTIONS = ("linear->LogOp", "LogOp->linear")
PAIR_KINDS = ("query", "fact", "operator")  # fact and operator pairs: LogOp queries only


# --- Patching the routing signal ----------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("forward", "route", "read"))
def _route_patch(params, recipient, donor, query_pos, own, other, *, forward, route, read):
    site, pattern = block_site(route, "hook_attn_out"), block_site(read, "hook_pattern")
    donor_logits, donor_cache = forward(params, donor, None, (site,))
    patches = iv.patch_from(donor_cache, site, positions=query_pos[:, None])
    rows = jnp.arange(recipient.shape[0])

    def measure(logits, cache):
        last = logits[:, -1]
        return dict(
            attention=cache[pattern][rows, :, -1, query_pos],  # [B, heads]: ANSWER -> QUERY
            ld=last[rows, own] - last[rows, other],
            pred=jnp.argmax(last, -1),
        )

    before = measure(*forward(params, recipient, None, (pattern,)))
    after = measure(*forward(params, recipient, patches, (pattern,)))
    return before, after, donor_logits[rows, -1, own] - donor_logits[rows, -1, other]


def route_patch(forward, params, recipient: Batch, donor: Batch, route: int, read: int) -> dict:
    """Patch the donor's routing signal into the recipient (same problems, other query); means over problems."""
    if recipient.tokens.shape != donor.tokens.shape:
        raise common.AnalysisError(f"route_patch: recipient {recipient.tokens.shape} and donor {donor.tokens.shape} batches differ in shape")
    own, other = recipient.first_answer, donor.first_answer
    before, after, ld_donor = jax.device_get(_route_patch(
        params, common.context(recipient), common.context(donor), recipient.query_pos, own, other,
        forward=forward, route=route, read=read,
    ))
    own, other = np.asarray(own), np.asarray(other)
    ld0, ld1, ldd = float(before["ld"].mean()), float(after["ld"].mean()), float(ld_donor.mean())
    return dict(
        attention_before=before["attention"].mean(0),
        attention_after=after["attention"].mean(0),
        accuracy_before=float((before["pred"] == own).mean()),
        donor_before=float((before["pred"] == other).mean()),  # the flip rate's baseline
        own_after=float((after["pred"] == own).mean()),
        donor_after=float((after["pred"] == other).mean()),  # the flip rate
        ld_before=ld0,
        ld_after=ld1,
        ld_donor=ldd,
        effect=float(normalized_effect(ld1, ld0, ldd)) if effect_defined(ld0, ldd) else None,
        n=int(len(own)),
    )


def route_patch_both(forward, params, logop: Batch, linear: Batch, route: int, read: int) -> dict:
    """``{"linear->LogOp": ..., "LogOp->linear": ...}`` for query-switch pairs (``logop`` and ``linear`` row-aligned)."""
    return {
        DIRECTIONS[0]: route_patch(forward, params, logop, linear, route, read),
        DIRECTIONS[1]: route_patch(forward, params, linear, logop, route, read),
    }


# --- Head ablation ------------------------------------------------------------------------------
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FirstToken:
    """``[mean margin, accuracy]`` of the first answer token at ANSWER (the last position).

    margin = logit(correct) - max over the other tokens; a pytree, so a sweep compiles once.
    """

    correct: Any  # int32 [B]

    def __call__(self, logits):
        last = logits[:, -1]
        rows = jnp.arange(last.shape[0])
        right = last[rows, self.correct]
        rest = last.at[rows, self.correct].set(-jnp.inf).max(-1)
        return jnp.stack([(right - rest).mean(), (jnp.argmax(last, -1) == self.correct).mean()])


def _chunk_size(batch: int, length: int) -> int:
    """Cells per vmapped slice: bounds a sweep's memory (~ cells x batch x length activations)."""
    return max(1, 200_000 // max(1, batch * length))


def head_ablation(forward, params, batch: Batch, n_layers: int, reference: Batch | None = None) -> dict:
    """Mean-ablation of each (layer, head): ``margin``, ``accuracy`` ``[layers, heads]`` and the unablated values.

    The mean of ``hook_z`` is over ``reference`` (default: ``batch``), per position.
    """
    tokens = common.context(batch)
    ref = tokens if reference is None else common.context(reference)
    names = tuple(block_site(i, "hook_z") for i in range(n_layers))
    _, cache = iv.run_with_cache(forward, params, ref, names)
    means = {n: jnp.mean(cache[n], axis=0, keepdims=True) for n in names}
    metric = FirstToken(jnp.asarray(batch.first_answer))
    cells = patching_sweep(forward, params, tokens, means, metric, "hook_z", ("layer", "head"), layers=n_layers,
                           chunk_size=_chunk_size(tokens.shape[0], tokens.shape[1]))
    clean = metric(iv.run_with_cache(forward, params, tokens, ())[0])
    cells, clean = np.asarray(cells), np.asarray(clean)
    return dict(margin=cells[..., 0], accuracy=cells[..., 1], clean_margin=float(clean[0]), clean_accuracy=float(clean[1]), n=int(tokens.shape[0]))


# --- Patching heatmaps --------------------------------------------------------------------------
def patching_maps(forward, params, clean: Batch, cf: Batch, n_layers: int) -> dict:
    """Normalised effects ``heads [layers, heads]`` (hook_z, all positions) and ``positions [layers, context]`` (hook_resid_pre)."""
    tokens, cf_tokens = common.context(clean), common.context(cf)
    metric = pairs_lib.logit_diff_metric(clean, cf)
    chunk = _chunk_size(tokens.shape[0], tokens.shape[1])
    heads = patching_effects(forward, params, tokens, cf_tokens, metric, "hook_z", ("layer", "head"), layers=n_layers, chunk_size=chunk)
    positions = patching_effects(forward, params, tokens, cf_tokens, metric, "hook_resid_pre", ("layer", "pos"), layers=n_layers, chunk_size=chunk)
    ld_clean, ld_cf = float(heads["clean"]), float(heads["cf"])
    defined = effect_defined(ld_clean, ld_cf)
    nan = lambda x: np.asarray(x) if defined else np.full(np.shape(x), np.nan)  # noqa: E731
    return dict(heads=nan(heads["effect"]), positions=nan(positions["effect"]), ld_clean=ld_clean, ld_cf=ld_cf, n=int(tokens.shape[0]))


def most_harmful_head(ablation: dict) -> tuple[int, int]:
    """The (layer, head) whose mean-ablation leaves the lowest accuracy, ties (all at 100%, say) to the lowest margin."""
    accuracy, margin = np.asarray(ablation["accuracy"]), np.asarray(ablation["margin"])
    first = np.lexsort((margin.ravel(), accuracy.ravel()))[0]
    return tuple(int(i) for i in np.unravel_index(first, accuracy.shape))


def top_cell(effects: np.ndarray) -> tuple[tuple[int, int] | None, float | None]:
    """The (layer, head) with the largest effect and the effect; (None, None) if all are undefined."""
    e = np.asarray(effects, np.float64)
    if not np.isfinite(e).any():
        return None, None
    idx = np.unravel_index(np.nanargmax(np.where(np.isfinite(e), e, -np.inf)), e.shape)
    return (int(idx[0]), int(idx[1])), float(e[idx])
