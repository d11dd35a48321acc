"""Counterfactual pairs from the sampler: edit one latent choice, build again.

A pair is the same problem (same letters, orders, facts) differing in exactly one choice:

* ``"query"``: the query switched between the chains (the first token always changes);
* ``"fact"``: one source fact flipped (the first operand's branch, the second's, or the
  linear chain's; the first token changes only when the flip changes the deciding branch);
* ``"operator"``: AND <-> OR (the first token may change);
* ``"chain_order"``: which chain's rules are written first (the first token never changes;
  only for unshuffled rules).

Each pair knows both correct first tokens, ``clean.first_answer`` and ``cf.first_answer``;
``first_tokens_differ`` says where they differ and ``make_pairs(..., differing_only=True)``
keeps only those pairs. All edits are pure functions on a ``Latent`` batch.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.interp.hooks import concrete
from logic_jax.interp.metrics import LogitDiff
from logic_jax.problem import format as fmt
from logic_jax.problem.config import ProblemConfig
from logic_jax.problem.sampler import Batch, Latent, build, canonical_order, sample_latents

KINDS = ("query", "fact", "operator", "chain_order")
FACT_SOURCES = ("first", "second", "linear")  # index into Latent.truth


def switch_query(latent: Latent) -> Latent:
    """Query the other chain: a_{d-1} <-> c_{d-1}."""
    return latent.replace(query_logop=~latent.query_logop)


def flip_fact(latent: Latent, source: int | jax.Array) -> Latent:
    """Flip one source fact: ``source`` 0 (first operand's branch), 1 (second's), 2 (linear), or ``[B]`` of those.

    Out-of-range values are refused when ``source`` is concrete; under ``jit`` they are the caller's.
    """
    source = jnp.asarray(source)
    if not jnp.issubdtype(source.dtype, jnp.integer):
        raise ValueError(f"flip_fact: source must be an int in 0..2 ({FACT_SOURCES}), got {source!r}")
    values = concrete(source)
    if values is not None and ((values < 0) | (values > 2)).any():
        raise ValueError(f"flip_fact: source must be in 0..2 ({FACT_SOURCES}), got {sorted(set(values[(values < 0) | (values > 2)].ravel().tolist()))}")
    flip = jax.nn.one_hot(source, 3, dtype=jnp.int32) > 0  # [3] or [B, 3]
    return latent.replace(truth=latent.truth ^ flip)


def flip_operator(latent: Latent) -> Latent:
    """AND <-> OR in the LogOp rule."""
    return latent.replace(is_and=~latent.is_and)


def swap_chain_order(latent: Latent, cfg: ProblemConfig) -> Latent:
    """Write the other chain's rules first (rules inside each chain keep their order)."""
    if cfg.shuffle_rules:
        raise ValueError("pair kind 'chain_order' needs unshuffled rules (problem config shuffle_rules=False)")
    logop_first = latent.rule_order[..., 0] < fmt.num_logop_chain_rules(cfg.depth)
    return latent.replace(rule_order=canonical_order(cfg.depth, ~logop_first).astype(latent.rule_order.dtype))


def edit(latent: Latent, kind: str, cfg: ProblemConfig, fact_source: int | jax.Array = 0) -> Latent:
    """The counterfactual latent of ``kind`` (one of ``KINDS``)."""
    if kind == "query":
        return switch_query(latent)
    if kind == "fact":
        return flip_fact(latent, fact_source)
    if kind == "operator":
        return flip_operator(latent)
    if kind == "chain_order":
        return swap_chain_order(latent, cfg)
    raise ValueError(f"unknown pair kind {kind!r}; known: {KINDS}")


def first_tokens_differ(clean: Batch, cf: Batch) -> jax.Array:
    """bool ``[B]``: the pair's correct first answer tokens differ."""
    return clean.first_answer != cf.first_answer


def select(batch: Any, index: Any) -> Any:
    """Rows ``index`` of every array of a Batch or Latent (ints, a slice or a bool mask)."""
    return jax.tree_util.tree_map(lambda x: x[index], batch)


def _draw(key: jax.Array, cfg: ProblemConfig, n: int, kind: str, fact_source: int | None) -> tuple[Batch, Batch]:
    latent_key, source_key = jax.random.split(key)
    latent = sample_latents(latent_key, cfg, n)
    source = jax.random.randint(source_key, (n,), 0, 3) if fact_source is None else fact_source
    return build(latent, cfg), build(edit(latent, kind, cfg, source), cfg)


def make_pairs(
    key: jax.Array,
    cfg: ProblemConfig,
    n: int,
    kind: str,
    *,
    fact_source: int | None = None,
    differing_only: bool = False,
    max_draws: int = 50,
) -> tuple[Batch, Batch]:
    """``(clean, cf)``: ``n`` problems drawn from ``cfg`` and their counterfactuals of ``kind``.

    ``fact_source`` (kind "fact"): 0, 1 or 2 flips that source in every pair, None a uniformly
    random one per pair. ``differing_only`` keeps drawing until ``n`` pairs whose first tokens
    differ (an error after ``max_draws`` batches, e.g. for "chain_order", which never changes it).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown pair kind {kind!r}; known: {KINDS}")
    if n < 1:
        raise ValueError(f"make_pairs: n must be at least 1, got {n}")
    if kind == "chain_order" and cfg.shuffle_rules:
        raise ValueError("pair kind 'chain_order' needs unshuffled rules (problem config shuffle_rules=False)")
    if fact_source is not None and fact_source not in (0, 1, 2):
        raise ValueError(f"fact_source must be None or 0, 1, 2 ({FACT_SOURCES}), got {fact_source!r}")
    if not differing_only:
        return _draw(key, cfg, n, kind, fact_source)
    kept: list[tuple[Batch, Batch]] = []
    count = 0
    for draw in range(max_draws):
        clean, cf = jax.device_get(_draw(jax.random.fold_in(key, draw), cfg, n, kind, fact_source))
        rows = np.flatnonzero(clean.first_answer != cf.first_answer)[: n - count]
        if rows.size:  # selected on the host: no compilation per number of rows
            kept.append((select(clean, rows), select(cf, rows)))
            count += rows.size
        if count == n:
            return tuple(jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.concatenate(xs)), *parts) for parts in zip(*kept))
    raise ValueError(f"pair kind {kind!r} gave only {count} of {n} pairs with differing first tokens in {max_draws} draws of {n} problems")


def context_tokens(batch: Batch, cfg: ProblemConfig) -> jax.Array:
    """``[B, context_len]``: the tokens up to ANSWER, all a causal model needs to predict the first answer token."""
    if batch.tokens.shape[1] != cfg.seq_len:  # another depth's problems: the slice would cut them elsewhere
        raise ValueError(f"the batch's problems are {batch.tokens.shape[1]} tokens long, but depth {cfg.depth}'s are {cfg.seq_len}: pass the config they were sampled with")
    return batch.tokens[:, : cfg.context_len]


def logit_diff_metric(clean: Batch, cf: Batch, reduce: str = "mean") -> LogitDiff:
    """paper.md's LD at ANSWER: logit(clean first token) - logit(counterfactual first token).

    Warns when no pair's first tokens differ (chain_order pairs; fact pairs of the linear
    source): the LD is then 0 by construction and normalised effects are NaN.
    """
    if np.shape(clean.first_answer) != np.shape(cf.first_answer):
        raise ValueError(f"logit_diff_metric: {np.shape(clean.first_answer)[0]} clean problems but {np.shape(cf.first_answer)[0]} counterfactual ones: pairs are row-aligned")
    clean_first, cf_first = concrete(clean.first_answer), concrete(cf.first_answer)  # None when traced
    same = clean_first is not None and cf_first is not None and bool(np.all(clean_first == cf_first))
    if same:
        warnings.warn(
            "logit_diff_metric: every pair has the same first answer token in its clean and counterfactual run, so the "
            "logit difference is 0 and normalised effects are NaN; choose pairs whose first token differs "
            "(make_pairs(..., differing_only=True), or another kind)", stacklevel=2,
        )
    return LogitDiff(pos=clean.answer_pos, tok_a=clean.first_answer, tok_b=cf.first_answer, reduce=reduce)
