"""How a truth value is read from the facts: the fact-lookup (induction) circuit. Not in the paper.

A proof restates the facts of the sources it uses (``s TRUE .``): after the letter s the model
must copy s's truth value from the Facts section, where the three facts come in random order;
the LogOp branch choice needs the same values. A transformer does this with an induction
circuit: a previous-token head at each fact's truth value (attending to the letter just
before it), then a lookup head from the answer's letter onto the truth value that follows the
same letter. Measured on teacher-forced proofs, at every answer position that holds a fact's
letter followed by its truth value:

* ``copy``: the share of those positions whose greedy next token is the right truth value;
* ``prev_token[layer, head]``: attention from each fact's truth value onto its letter;
* ``lookup[layer, head]``: attention from the answer's letter onto that letter's truth value
  (a seed may instead look the value up from ANSWER while choosing the letter).

A seed without the circuit can only guess a truth value from the rest of the proof (OR proofs
mostly restate TRUE sources, AND proofs FALSE ones), and cannot choose LogOp branches
(``configs/tiny_cpu.py``'s stuck seeds).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.analysis import common
from logic_jax.interp.hooks import block_site
from logic_jax.problem import format as fmt


def fact_positions(context_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(letters, truth values): the positions of the three written facts (the same in every problem of a depth)."""
    letters = fmt.facts_pos(fmt.depth_of_context(context_len)) + 1 + fmt.FACT_LEN * np.arange(3)
    return letters, letters + 1


@functools.partial(jax.jit, static_argnames=("forward", "n_layers", "context_len"))
def _rows(params, tokens, *, forward, n_layers, context_len):
    names = tuple(block_site(i, "hook_pattern") for i in range(n_layers))
    logits, cache = forward(params, tokens, None, names)
    pattern = jnp.stack([cache[n] for n in names], axis=1).astype(jnp.float32)  # [B, layers, heads, q, k]
    letters_at, values_at = fact_positions(context_len)
    length = tokens.shape[1]
    following = jnp.concatenate([tokens[:, 1:], jnp.full_like(tokens[:, :1], fmt.PAD)], axis=1)
    reads = (jnp.arange(length) >= context_len) & ((following == fmt.TRUE) | (following == fmt.FALSE))
    which = (tokens[:, :, None] == tokens[:, letters_at][:, None, :]) & reads[:, :, None]  # [B, L, 3]: the fact it restates
    restating = which.any(-1)
    return dict(
        reads=restating.sum(1),
        copied=((jnp.argmax(logits, -1) == following) & restating).sum(1),
        prev_token=pattern[:, :, :, values_at, letters_at].mean(-1),
        lookup=jnp.einsum("blhqk,bqs,sk->blh", pattern, which.astype(jnp.float32), jax.nn.one_hot(values_at, length)),
    )


def measure(forward, params, tokens, context_len: int, n_layers: int, chunk: int = 1024) -> dict:
    """Fact lookup of one seed on whole problems ``tokens`` [B, L] (context, proof with EOS, PAD)."""
    fn = functools.partial(_rows, forward=forward, n_layers=n_layers, context_len=context_len)
    rows = common.map_chunks(fn, params, [jnp.asarray(tokens)], chunk)
    reads = int(rows["reads"].sum())
    if reads == 0:
        raise common.AnalysisError("fact lookup: no answer restates a fact (are the answers in the tokens?)")
    prev, lookup = rows["prev_token"].mean(0), rows["lookup"].sum(0) / reads
    prev_head, lookup_head = (tuple(int(i) for i in np.unravel_index(np.argmax(a), a.shape)) for a in (prev, lookup))
    return dict(
        copy=float(rows["copied"].sum() / reads), reads=reads,
        prev_token=prev, prev_head=prev_head, prev_head_attention=float(prev[prev_head]),
        lookup=lookup, lookup_head=lookup_head, lookup_head_attention=float(lookup[lookup_head]),
    )
