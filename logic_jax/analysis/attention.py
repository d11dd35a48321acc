"""Where the position that predicts the first answer token (ANSWER) looks: claims 3 and 5.

Claim 3: in the reading layer ("layer 3", blocks.2), attention from ANSWER onto QUERY is above
90% for linear queries and below 5% for LogOp queries. Claim 5: for LogOp queries it reads the
facts and the operator instead. Both are read off the same rows of ``hook_pattern``
(``[B, heads, q, k]`` at q = ANSWER), summed over regions of the context.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.analysis import common
from logic_jax.interp.hooks import block_site
from logic_jax.problem import format as fmt
from logic_jax.problem.sampler import Batch

# Disjoint regions of the context, in display order. "first-token fact" is the fact (letter and
# truth value) of the source that the correct first answer token names; "other branch fact" the
# facts of the LogOp chain's other sources (a_0, b_0); "linear fact" that of the linear chain's
# source c_0 (for LogOp queries a distractor: claim 5 says it is not read); "operator" the AND/OR.
REGIONS = ("QUERY", "first-token fact", "other branch fact", "linear fact", "operator", "rules", "rest")


@functools.partial(jax.jit, static_argnames=("forward", "layer"))
def _answer_rows(params, tokens, *, forward, layer):
    site = block_site(layer, "hook_pattern")
    _, cache = forward(params, tokens, None, (site,))
    return cache[site][:, :, -1, :]  # tokens end at ANSWER


def answer_rows(forward, params, batch: Batch, layer: int, chunk: int = 1024) -> np.ndarray:
    """``[B, heads, context_len]``: the attention of block ``layer`` from ANSWER over the context."""
    return common.map_chunks(functools.partial(_answer_rows, forward=forward, layer=layer), params, [common.context(batch)], chunk)


@functools.partial(jax.jit, static_argnames=("forward", "n_layers"))
def _patterns(params, tokens, *, forward, n_layers):
    names = tuple(block_site(i, "hook_pattern") for i in range(n_layers))
    _, cache = forward(params, tokens, None, names)
    return jnp.stack([cache[n] for n in names], axis=1)  # [B, layers, heads, q, k]


def patterns(forward, params, tokens: jax.Array, n_layers: int) -> np.ndarray:
    """``[B, layers, heads, q, k]``: every layer's attention on a few problems (for figures)."""
    return np.asarray(_patterns(params, jnp.asarray(tokens), forward=forward, n_layers=n_layers))


def region_masks(batch: Batch) -> np.ndarray:
    """bool ``[B, len(REGIONS), context_len]``: each context position in exactly one region."""
    b = jax.device_get(batch)
    tokens = np.asarray(b.tokens)
    n, length = tokens.shape[0], int(b.answer_pos[0]) + 1
    depth = fmt.depth_of_context(length)
    rows = np.arange(n)
    masks = np.zeros((n, len(REGIONS), length), bool)
    masks[rows, 0, np.asarray(b.query_pos)] = True
    fact_pos = np.asarray(b.fact_pos)  # [B, 3]: letters of the facts of a_0, b_0, c_0
    is_first = tokens[rows[:, None], fact_pos] == np.asarray(b.first_answer)[:, None]
    first, other_branch, linear, operator, rules, rest = (REGIONS.index(r) for r in REGIONS[1:])
    for s in range(3):
        region = np.where(is_first[:, s], first, linear if s == 2 else other_branch)
        for offset in (0, 1):  # the letter and its truth value
            masks[rows, region, fact_pos[:, s] + offset] = True
    logop_rule = np.asarray(b.rule_pos)[:, 2 * (depth - 2)]
    masks[rows, operator, logop_rule + 1] = True
    masks[:, rules] = (np.arange(length)[None, :] < fmt.facts_pos(depth)) & ~masks[:, operator]
    masks[:, rest] = ~masks.any(axis=1)
    return masks


def region_mass(rows: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``[B, heads, regions]``: attention summed over each region."""
    return np.einsum("bhk,brk->bhr", rows, masks.astype(rows.dtype))


def summarize(rows: np.ndarray, batch: Batch) -> dict:
    """Per-head means over the problems of one query type.

    ``onto_query [heads]`` (attention from ANSWER onto QUERY), ``head_mean`` (its mean over
    heads), ``regions [heads, regions]`` (attention mass per region, ``REGIONS``), ``n``.
    """
    if rows.shape[0] == 0:
        raise common.AnalysisError("attention summary of an empty batch")
    mass = region_mass(rows, region_masks(batch)).mean(0)
    onto_query = mass[:, 0]
    return dict(onto_query=onto_query, head_mean=float(onto_query.mean()), regions=mass, n=int(rows.shape[0]))


def claim3(linear: dict, logop: dict) -> dict:
    """The numbers of claim 3 from the two ``summarize`` results.

    The reading head is the head with the most attention on QUERY for linear queries; the
    paper's numbers are compared with that head (and with the mean over heads).
    """
    head = int(np.argmax(linear["onto_query"]))
    return dict(
        head=head,
        linear_head=float(linear["onto_query"][head]),
        logop_head=float(logop["onto_query"][head]),
        linear_mean=linear["head_mean"],
        logop_mean=logop["head_mean"],
        linear_per_head=linear["onto_query"],
        logop_per_head=logop["onto_query"],
    )


def claim5(logop: dict) -> dict:
    """For LogOp queries: the attention mass on the branch sources' facts, the linear fact and the operator.

    ``fact_head`` is the head with the most mass on the first-token fact (the fact the
    answer needs), ``operator_head`` the head with the most mass on the operator. The claim
    is about the two branch sources' facts (``branch_facts``: the most any one head puts on
    both), not the linear chain's (``linear_fact``, a distractor for LogOp queries).
    """
    r = logop["regions"]
    i_fact, i_other, i_linear, i_op = (REGIONS.index(n) for n in ("first-token fact", "other branch fact", "linear fact", "operator"))
    fact_head, op_head = int(np.argmax(r[:, i_fact])), int(np.argmax(r[:, i_op]))
    return dict(
        fact_head=fact_head,
        first_fact=float(r[fact_head, i_fact]),
        other_branch_fact=float(r[fact_head, i_other]),
        linear_fact=float(r[fact_head, i_linear]),
        operator_head=op_head,
        operator=float(r[op_head, i_op]),
        branch_facts=float(r[:, [i_fact, i_other]].sum(1).max()),
        regions=r,
    )
