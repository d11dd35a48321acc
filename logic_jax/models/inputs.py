"""What both models check of their token input before the first layer."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from logic_jax.interp.hooks import concrete


def check_tokens(tokens, vocab_size: int) -> None:
    """``tokens`` must be int ``[batch, pos]`` (checked under jit too: shapes and dtypes are
    static) with ids in ``0..vocab_size-1`` (checked where the ids are concrete; under jit,
    ``embed_rows`` makes a bad id's row NaN)."""
    shape, dtype = np.shape(tokens), jnp.result_type(tokens)
    if len(shape) != 2 or not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"tokens must be an integer array [batch, pos], got {dtype} of shape {shape}")
    ids = concrete(tokens)
    if ids is not None and ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"token ids must be in 0..{vocab_size - 1}, got {lo}..{hi}")


def embed_rows(table, tokens):
    """The rows of ``table`` at ``tokens``; NaN for an id outside it, negative ones included.

    Plain indexing would clamp (and ``jnp.take`` wrap) a bad id to a real row: under jit, where
    ``check_tokens`` cannot see the ids, that is a finite, wrong answer; NaN is noticed."""
    return table.at[tokens].get(mode="fill", fill_value=jnp.nan, wrap_negative_indices=False)
