"""The jit-compiled, vectorised JAX sampler of problem.md.

Two stages, both pure and fixed-shape:

* ``sample_latents(key, cfg, batch_size)`` draws every random choice of a problem (the letters,
  the query, the operator, the three source facts, the chain, operand, rule and fact orders)
  into a ``Latent`` pytree;
* ``build(latent, cfg)`` turns latents into tokens, the answer mask and metadata.

``sample(key, cfg, batch_size)`` is both. Counterfactual pairs edit a latent and build again,
so a pair differs in exactly the edited choice. Everything runs inside jit, vmap and
lax.scan with no host round trip; the same key gives the same batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from logic_jax.problem import format as fmt
from logic_jax.problem.config import ProblemConfig


@struct.dataclass
class Latent:
    """The random choices of one problem (a leading batch axis in a batch)."""

    letters: jax.Array  # int32 [3d]: a_0..a_{d-1}, b_0..b_{d-1}, c_0..c_{d-1}
    query_logop: jax.Array  # bool: the LogOp chain is queried
    is_and: jax.Array  # bool: the LogOp rule's operator is AND
    truth: jax.Array  # bool [3]: source facts of the first operand's branch, the second's, the linear chain
    operands_swapped: jax.Array  # bool: the LogOp rule reads b OP a
    rule_order: jax.Array  # int32 [n_rules]: canonical rule index of each written rule
    fact_order: jax.Array  # int32 [3]: source (0 a_0, 1 b_0, 2 c_0) of each written fact


@struct.dataclass
class Batch:
    """Fixed-shape arrays of a batch of problems; position axes are ``cfg.seq_len`` long.

    Canonical rule order (``rule_pos``): for each level i < d-2, ``a_i -> a_{i+1}`` then
    ``b_i -> b_{i+1}``; then the LogOp rule; then ``c_i -> c_{i+1}``.
    """

    tokens: jax.Array  # int32 [B, L]: context, answer (ending with EOS), PAD
    answer_mask: jax.Array  # bool [B, L]: the answer tokens, EOS included (the loss targets)
    answer_len: jax.Array  # int32 [B]
    first_answer: jax.Array  # int32 [B]: the planning decision
    case: jax.Array  # int32 [B]: index into format.CASE_NAMES
    query_pos: jax.Array  # int32 [B]: position of the queried letter (QUERY)
    answer_pos: jax.Array  # int32 [B]: position of ANSWER
    rule_pos: jax.Array  # int32 [B, n_rules]: first position of each rule, canonical order
    fact_pos: jax.Array  # int32 [B, 3]: position of the facts of a_0, b_0, c_0
    logop_chain_first: jax.Array  # bool [B]: the LogOp chain's first rule precedes the linear chain's
    latent: Latent

    # Short names for the latent choices the analyses group by.
    @property
    def query_logop(self):
        return self.latent.query_logop

    @property
    def is_and(self):
        return self.latent.is_and

    @property
    def truth(self):
        return self.latent.truth


# --- Drawing the latent choices ------------------------------------------------------------
def _bit(key, p: float, fixed, shape):
    """A Bernoulli(p) draw, or the fixed value broadcast."""
    if fixed is not None:
        return jnp.full(shape, bool(fixed))
    return jax.random.bernoulli(key, p, shape)


def _canonical_order(depth: int, logop_chain_first):
    """Written rule order without shuffling: one chain's rules, then the other's."""
    n_logop = 2 * depth - 3
    idx = jnp.arange(fmt.num_rules(depth))
    linear_first = jnp.concatenate([idx[n_logop:], idx[:n_logop]])
    return jnp.where(logop_chain_first[..., None], idx, linear_first)


@functools.partial(jax.jit, static_argnums=(1, 2))
def sample_latents(key: jax.Array, cfg: ProblemConfig, batch_size: int) -> Latent:
    d, b = cfg.depth, batch_size
    keys = jax.random.split(key, 10)
    # 3d distinct letters: the first 3d of a random permutation of the alphabet.
    letters = jnp.argsort(jax.random.uniform(keys[0], (b, fmt.NUM_LETTERS)), axis=-1)[:, : 3 * d]
    query_logop = _bit(keys[1], cfg.p_logop, None if cfg.fix_query is None else cfg.fix_query == "logop", (b,))
    is_and = _bit(keys[2], cfg.p_and, None if cfg.fix_op is None else cfg.fix_op == "and", (b,))
    truth = jnp.stack(
        [
            _bit(keys[3], 0.5, cfg.fix_truth_first, (b,)),
            _bit(keys[4], 0.5, cfg.fix_truth_second, (b,)),
            _bit(keys[5], 0.5, cfg.fix_truth_linear, (b,)),
        ],
        axis=-1,
    )
    swapped = _bit(keys[6], 0.5, cfg.fix_operands_swapped, (b,))
    if cfg.shuffle_rules:
        rule_order = jnp.argsort(jax.random.uniform(keys[7], (b, fmt.num_rules(d))), axis=-1)
    else:
        rule_order = _canonical_order(d, _bit(keys[7], 0.5, cfg.fix_logop_chain_first, (b,)))
    fact_order = jnp.argsort(jax.random.uniform(keys[8], (b, 3)), axis=-1)
    return Latent(
        letters=letters.astype(jnp.int32),
        query_logop=query_logop,
        is_and=is_and,
        truth=truth,
        operands_swapped=swapped,
        rule_order=rule_order.astype(jnp.int32),
        fact_order=fact_order.astype(jnp.int32),
    )


# --- Building tokens from latents ----------------------------------------------------------
def _scatter_segments(out, base, table, lengths):
    """Write the rows of ``table`` back to back from ``base``, each cut to its length."""
    starts = base + jnp.cumsum(lengths) - lengths
    width = table.shape[-1]
    pos = starts[:, None] + jnp.arange(width)[None, :]
    pos = jnp.where(jnp.arange(width)[None, :] < lengths[:, None], pos, out.shape[0])  # dropped
    return out.at[pos].set(table, mode="drop"), starts


def _pad_row(row, width):
    return jnp.concatenate([jnp.stack(row), jnp.full((width - len(row),), fmt.PAD, jnp.int32)])


def _value(truth):
    return jnp.where(truth, fmt.TRUE, fmt.UNDETERMINED).astype(jnp.int32)


def _fact(truth):
    return jnp.where(truth, fmt.TRUE, fmt.FALSE).astype(jnp.int32)


def _step(p, q, value):
    return [p, jnp.int32(fmt.IMPLIES), q, jnp.int32(fmt.SEMI), q, value, jnp.int32(fmt.DOT)]


def _build_one(lat: Latent, depth: int):
    d = depth
    i32 = lambda t: jnp.int32(t)  # noqa: E731
    a, b, c = lat.letters[:d], lat.letters[d : 2 * d], lat.letters[2 * d :]
    swapped = lat.operands_swapped
    first = jnp.where(swapped, b, a)  # the first operand's branch
    second = jnp.where(swapped, a, b)
    t1, t2, tc = lat.truth[0], lat.truth[1], lat.truth[2]
    op = jnp.where(lat.is_and, fmt.AND, fmt.OR).astype(jnp.int32)
    x, y, z = first[d - 2], second[d - 2], a[d - 1]
    length = fmt.seq_len(d)
    tokens = jnp.full((length,), fmt.PAD, jnp.int32)

    # Rules, in canonical order, then written in rule_order.
    rules = []
    for i in range(d - 2):
        rules += [_pad_row([a[i], i32(fmt.IMPLIES), a[i + 1], i32(fmt.DOT)], 6), _pad_row([b[i], i32(fmt.IMPLIES), b[i + 1], i32(fmt.DOT)], 6)]
    rules.append(_pad_row([x, op, y, i32(fmt.IMPLIES), z, i32(fmt.DOT)], 6))
    rules += [_pad_row([c[i], i32(fmt.IMPLIES), c[i + 1], i32(fmt.DOT)], 6) for i in range(d - 1)]
    rule_table = jnp.stack(rules)
    rule_lens = jnp.full((fmt.num_rules(d),), fmt.RULE_LEN, jnp.int32).at[2 * (d - 2)].set(fmt.LOGOP_RULE_LEN)
    tokens, written_starts = _scatter_segments(tokens, 0, rule_table[lat.rule_order], rule_lens[lat.rule_order])
    rule_pos = jnp.zeros_like(written_starts).at[lat.rule_order].set(written_starts)

    # Facts (a_0, b_0, c_0 in fact_order) and the question.
    truth_abc = jnp.stack([jnp.where(swapped, t2, t1), jnp.where(swapped, t1, t2), tc])
    sources = jnp.stack([a[0], b[0], c[0]])
    r = fmt.rules_len(d)
    fact_rows = jnp.stack([sources[lat.fact_order], _fact(truth_abc[lat.fact_order]), jnp.full((3,), fmt.DOT, jnp.int32)], axis=-1)
    query = jnp.where(lat.query_logop, z, c[d - 1])
    tail = [i32(fmt.FACTS), *fact_rows.reshape(-1), i32(fmt.END_FACTS), i32(fmt.QUESTION), query, i32(fmt.DOT), i32(fmt.END_QUESTION), i32(fmt.ANSWER)]
    tokens = tokens.at[r : r + len(tail)].set(jnp.stack(tail))
    fact_pos = jnp.zeros((3,), jnp.int32).at[lat.fact_order].set(r + 1 + fmt.FACT_LEN * jnp.arange(3, dtype=jnp.int32))

    # The minimal proof, as fixed segments whose lengths switch them on and off.
    use1, use2 = _branches_used(lat.is_and, t1, t2)
    logop = lat.query_logop
    both = use1 & use2
    one_src, one_truth = jnp.where(use1, first[0], second[0]), jnp.where(use1, t1, t2)
    logop_facts = jnp.where(
        both,
        jnp.stack([first[0], _fact(t1), second[0], _fact(t2), i32(fmt.DOT)]),
        jnp.stack([one_src, _fact(one_truth), i32(fmt.DOT), i32(fmt.PAD), i32(fmt.PAD)]),
    )
    linear_facts = jnp.stack([c[0], _fact(tc), i32(fmt.DOT), i32(fmt.PAD), i32(fmt.PAD)])
    segments = [jnp.where(logop, logop_facts, linear_facts)]
    lengths = [jnp.where(logop & both, 5, 3)]
    for i in range(d - 1):
        branch = i < d - 2  # the LogOp branches have d-2 levels, the linear chain d-1
        slot_a = jnp.where(logop, jnp.stack(_step(first[i], first[i + 1], _value(t1)) if branch else [i32(fmt.PAD)] * 7), jnp.stack(_step(c[i], c[i + 1], _value(tc))))
        slot_b = jnp.stack(_step(second[i], second[i + 1], _value(t2)) if branch else [i32(fmt.PAD)] * 7)
        slot_a = jnp.where(logop & ~use1 & branch, slot_b, slot_a)  # a lone second branch takes slot A
        segments += [slot_a, slot_b]
        lengths += [jnp.where(logop, branch, True) * fmt.STEP_LEN, (logop & both & branch) * fmt.STEP_LEN]
    conclusion = jnp.where(lat.is_and, t1 & t2, t1 | t2)
    segments.append(jnp.stack([x, op, y, i32(fmt.IMPLIES), z, i32(fmt.SEMI), z, _value(conclusion), i32(fmt.DOT)]))
    lengths.append(logop * fmt.LOGOP_STEP_LEN)
    segments.append(jnp.stack([i32(fmt.EOS)]))
    lengths.append(jnp.int32(1))
    width = fmt.LOGOP_STEP_LEN
    table = jnp.stack([jnp.concatenate([s, jnp.full((width - s.shape[0],), fmt.PAD, jnp.int32)]) for s in segments])
    lengths = jnp.stack(lengths).astype(jnp.int32)
    context_len = fmt.context_len(d)
    tokens, _ = _scatter_segments(tokens, context_len, table, lengths)
    n_answer = lengths.sum()
    pos = jnp.arange(length)
    answer_mask = (pos >= context_len) & (pos < context_len + n_answer)

    return dict(
        tokens=tokens,
        answer_mask=answer_mask,
        answer_len=n_answer,
        first_answer=jnp.where(logop, one_src, c[0]).astype(jnp.int32),
        case=jnp.where(logop, 1 + 4 * lat.is_and + 2 * (~t1) + (~t2), 0).astype(jnp.int32),
        query_pos=jnp.int32(fmt.query_pos(d)),
        answer_pos=jnp.int32(fmt.answer_pos(d)),
        rule_pos=rule_pos,
        fact_pos=fact_pos,
        logop_chain_first=rule_pos[0] < rule_pos[-1],
    )


def _branches_used(is_and, truth_first, truth_second):
    """``format.branches_used`` on arrays: the first deciding branch, else both."""
    deciding = ~is_and
    first = truth_first == deciding
    second = truth_second == deciding
    return first | ~second, ~first


@functools.partial(jax.jit, static_argnums=(1,))
def build(latent: Latent, cfg: ProblemConfig) -> Batch:
    """Tokens, answer mask and metadata of a batch of latents."""
    fields = jax.vmap(functools.partial(_build_one, depth=cfg.depth))(latent)
    return Batch(latent=latent, **fields)


@functools.partial(jax.jit, static_argnums=(1, 2))
def sample(key: jax.Array, cfg: ProblemConfig, batch_size: int) -> Batch:
    """A batch of ``batch_size`` problems drawn from ``cfg``, deterministic in ``key``."""
    return build(sample_latents(key, cfg, batch_size), cfg)
