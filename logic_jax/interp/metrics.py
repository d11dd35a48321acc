"""Patching metrics of paper.md: the logit difference and the normalised effect."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any


def logit_diff(logits: Array, pos: Array | int, tok_a: Array, tok_b: Array) -> Array:
    """``logits[b, pos[b], tok_a[b]] - logits[b, pos[b], tok_b[b]]``, shape ``[B]``.

    ``logits [B, L, V]``; ``pos`` an int or ``[B]`` (the scored position: the one predicting
    the first answer token); ``tok_a``, ``tok_b`` ``[B]`` (clean and counterfactual first tokens).
    """
    batch = logits.shape[0]
    for name, x in (("pos", pos), ("tok_a", tok_a), ("tok_b", tok_b)):  # shapes are static under jit
        if np.ndim(x) and np.shape(x) != (batch,):
            raise ValueError(f"logit_diff: {name} of shape {np.shape(x)} does not match the batch of {batch} in logits {logits.shape}")
    pos = jnp.broadcast_to(jnp.asarray(pos), (batch,))
    rows = jnp.arange(batch)
    # An index past the end is NaN, not clamped to the last position or token (a finite wrong LD).
    scored = logits.at[rows, pos].get(mode="fill", fill_value=jnp.nan)  # [B, V]
    return scored.at[rows, tok_a].get(mode="fill", fill_value=jnp.nan) - scored.at[rows, tok_b].get(mode="fill", fill_value=jnp.nan)


def normalized_effect(patched: Array, clean: Array, cf: Array) -> Array:
    """``(patched - clean) / (cf - clean)``: 0 is no effect, 1 a full flip to the counterfactual.

    Pass means over the pairs (``mean LD``), as paper.md does; ``patched`` may be a whole sweep.
    """
    return (patched - clean) / (cf - clean)


UNDEFINED_BELOW = 1e-6  # |LD_cf - LD_clean| under this: the model does not tell the pair apart


def effect_defined(clean: float, cf: float) -> bool:
    """Whether normalised effects mean anything: the clean and counterfactual mean LDs differ."""
    return abs(float(cf) - float(clean)) >= UNDEFINED_BELOW


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LogitDiff:
    """The mean logit difference as a pytree callable: ``LogitDiff(pos, tok_a, tok_b)(logits)``.

    Being a pytree (arrays as leaves), it passes into a compiled sweep as data, so one
    compilation serves every batch of the same shape. ``reduce="none"`` gives ``[B]``.
    """

    pos: Array  # int32 [B] (or scalar)
    tok_a: Array  # int32 [B]: the clean run's correct token
    tok_b: Array  # int32 [B]: the counterfactual run's correct token
    reduce: str = dataclasses.field(default="mean", metadata=dict(static=True))

    def __call__(self, logits: Array) -> Array:
        ld = logit_diff(logits, self.pos, self.tok_a, self.tok_b)
        if self.reduce == "mean":
            return ld.mean()
        if self.reduce == "none":
            return ld
        raise ValueError(f"LogitDiff.reduce must be 'mean' or 'none', got {self.reduce!r}")
