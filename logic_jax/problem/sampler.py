"""The jit-compiled, vectorised JAX sampler of problem.md.

Two stages, both pure and fixed-shape:

* ``sample_latents(key, cfg, batch_size)`` draws every random choice of a problem (the letters,
  the query, the operator, the three source facts, the chain, operand, rule and fact orders)
  into a ``Latent`` pytree;
* ``build(latent, cfg)`` turns latents into tokens, the answer mask and metadata, by
  gathers from the tables of ``templates.py`` (no scatter, no sort: fast on CPU and GPU).

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
from logic_jax.problem import templates
from logic_jax.problem.config import ProblemConfig


@struct.dataclass
class Latent:
    """The random choices of one problem (a leading batch axis in a batch)."""

    letters: jax.Array  # int32 [3d]: a_0..a_{d-1}, b_0..b_{d-1}, c_0..c_{d-1}
    query_logop: jax.Array  # bool: the LogOp chain is queried
    is_and: jax.Array  # bool: the LogOp rule's operator is AND
    truth: jax.Array  # bool [3]: source facts of the first operand's branch, the second's, the linear chain
    operands_swapped: jax.Array  # bool: the LogOp rule reads b OP a
    rule_order: jax.Array  # int32 [n_rules]: canonical rule index of each written rule (one chain, then the other, unless cfg.shuffle_rules)
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
# Random bits are the sampler's main cost on a CPU, so draws share 32-bit words: a word is a
# fraction x in [0, 1); a draw in [0, n) is floor(n x), and the next draw reads frac(n x).
# Each word serves draws while the product of their ranges stays <= 2**16, so every draw is
# within 2**-16 (relative) of uniform; at depth 3 a problem takes 5 words.
_DRAWS_PER_WORD_BUDGET = 1 << 16


def _mulhi(words, n: int):
    """floor(words * n / 2**32) for uint32 words and n < 2**16."""
    high, low = words >> 16, words & 0xFFFF
    return (high * n + ((low * n) >> 16)) >> 16


def _word_of_each_draw(ranges: list[int]) -> list[int]:
    """Which word each draw reads: a new one whenever the product of ranges would pass the budget."""
    words, budget = [], _DRAWS_PER_WORD_BUDGET + 1
    for n in ranges:
        if budget * n > _DRAWS_PER_WORD_BUDGET:
            budget = 1
            words.append(words[-1] + 1 if words else 0)
        else:
            words.append(words[-1])
        budget *= n
    return words


def _uniform_draws(words, ranges: list[int]):
    """Independent draws in [0, n) for each n of ``ranges``, sharing words as ``_word_of_each_draw`` says."""
    draws, x, previous = [], None, None
    for n, w in zip(ranges, _word_of_each_draw(ranges)):
        if w != previous:
            x, previous = words[:, w], w
        draws.append(_mulhi(x, n).astype(jnp.int32))
        x = x * jnp.uint32(n)  # frac(n x), modulo 2**32
    return draws


def _coin(word, p: float):
    """Bernoulli(p) from the top 24 bits of a uint32 word, p resolved to 2**-24."""
    return (word >> 8) < jnp.uint32(round(p * (1 << 24)))


def _distinct_letters(ranks: list):
    """Distinct letters from ranks r_i in [0, 26 - i): pick i is the r_i-th unused letter.

    The unused letter of rank r is found by walking the picks so far in ascending order
    (kept sorted by insertion), bumping r past each one at or below it.
    """
    chosen_sorted = []  # columns, ascending per row
    letters = []
    for rank in ranks:
        x = rank
        for s in chosen_sorted:
            x = x + (x >= s)
        letters.append(x)
        # Insert x into the ascending columns.
        merged, previous = [], None
        for s in chosen_sorted:
            merged.append(jnp.where(s < x, s, x if previous is None else jnp.where(previous < x, x, previous)))
            previous = s
        merged.append(x if previous is None else jnp.maximum(previous, x))
        chosen_sorted = merged
    return jnp.stack(letters, axis=-1)


@functools.partial(jax.jit, static_argnums=(1, 2))
def sample_latents(key: jax.Array, cfg: ProblemConfig, batch_size: int) -> Latent:
    d, b, n = cfg.depth, batch_size, fmt.num_rules(cfg.depth)
    # Letter ranks, then the fact order (one of 6).
    ranges = [fmt.NUM_LETTERS - i for i in range(3 * d)] + [len(templates.FACT_ORDERS)]
    n_draw_words = _word_of_each_draw(ranges)[-1] + 1
    words = jax.random.bits(key, (b, n_draw_words + 2 + (n if cfg.shuffle_rules else 0)), jnp.uint32)
    draws = _uniform_draws(words, ranges)
    letters = _distinct_letters(draws[:-1])
    # Drawn either way, so that the other choices of a key do not depend on shuffle_facts.
    fact_order = jnp.asarray(templates.FACT_ORDERS)[draws[-1] if cfg.shuffle_facts else jnp.zeros((b,), jnp.int32)]  # [0]: a_0, b_0, c_0

    def fixed_or(value, drawn):
        return drawn if value is None else jnp.full((b,), bool(value))

    coin_a, coin_b = words[:, n_draw_words], words[:, n_draw_words + 1]
    query_logop = fixed_or(None if cfg.fix_query is None else cfg.fix_query == "logop", _coin(coin_a, cfg.p_logop))
    is_and = fixed_or(None if cfg.fix_op is None else cfg.fix_op == "and", _coin(coin_b, cfg.p_and))
    bit = lambda i: ((coin_a >> i) & 1).astype(bool)  # noqa: E731  (the low 8 bits are not used by the coin)
    if cfg.p_true == 0.5:
        drawn_truth = [bit(0), bit(1), bit(2)]
    else:  # 24-bit coins from words of their own, so that every other choice of the key stays as it was
        truth_words = jax.random.bits(jax.random.fold_in(key, 1), (b, 3), jnp.uint32)
        drawn_truth = [_coin(truth_words[:, i], cfg.p_true) for i in range(3)]
    truth = jnp.stack(
        [fixed_or(cfg.fix_truth_first, drawn_truth[0]), fixed_or(cfg.fix_truth_second, drawn_truth[1]), fixed_or(cfg.fix_truth_linear, drawn_truth[2])],
        axis=-1,
    )
    swapped = fixed_or(cfg.fix_operands_swapped, bit(3))
    if cfg.shuffle_rules:
        rule_order = jnp.argsort(words[:, n_draw_words + 2 :], axis=-1)
    else:
        rule_order = canonical_order(d, fixed_or(cfg.fix_logop_chain_first, bit(4)))
    return Latent(
        letters=letters,
        query_logop=query_logop,
        is_and=is_and,
        truth=truth,
        operands_swapped=swapped,
        rule_order=rule_order.astype(jnp.int32),
        fact_order=fact_order.astype(jnp.int32),
    )


def canonical_order(depth: int, logop_chain_first):
    """Written rule order without shuffling: one chain's rules, then the other's."""
    n_logop = fmt.num_logop_chain_rules(depth)
    idx = jnp.arange(fmt.num_rules(depth))
    linear_first = jnp.concatenate([idx[n_logop:], idx[:n_logop]])
    return jnp.where(logop_chain_first[..., None], idx, linear_first)


# --- Building tokens from latents ----------------------------------------------------------
def _inverse(order, size):
    """inverse[r] = j where order[j] == r, for a batch of permutations [B, size]."""
    onehot = order[:, :, None] == jnp.arange(size)[None, None, :]
    return jnp.sum(onehot * jnp.arange(size)[None, :, None], axis=1)


def _shuffled_rules(lat: Latent, tab, k, d):
    """Rules section symbols: position t reads written rule RULE_SLOT[k, t] at RULE_OFFSET[k, t]."""
    canonical = jnp.take_along_axis(lat.rule_order, tab["rule_slot"][k], axis=1)
    variant = templates.rule_variant(lat.is_and, lat.operands_swapped)
    return tab["rules"][variant[:, None], canonical, tab["rule_offset"][k]]


def _facts_and_question(lat: Latent, d):
    """Symbols from FACTS to ANSWER: the facts of a_0, b_0, c_0 in fact_order, then the question."""
    b = lat.letters.shape[0]
    sym = lambda token: 3 * d + token  # noqa: E731  (a constant token as a symbol)
    t1, t2, tc = lat.truth[:, 0], lat.truth[:, 1], lat.truth[:, 2]
    truth_abc = jnp.stack([jnp.where(lat.operands_swapped, t2, t1), jnp.where(lat.operands_swapped, t1, t2), tc], axis=-1)
    source_slot = jnp.array([0, d, 2 * d], jnp.int32)[lat.fact_order]
    value = sym(jnp.where(jnp.take_along_axis(truth_abc, lat.fact_order, axis=1), fmt.TRUE, fmt.FALSE))
    facts = jnp.stack([source_slot, value, jnp.full((b, 3), sym(fmt.DOT))], axis=-1).reshape(b, 9)
    const = lambda *tokens: jnp.broadcast_to(jnp.array([sym(t) for t in tokens], jnp.int32), (b, len(tokens)))  # noqa: E731
    query_slot = jnp.where(lat.query_logop, d - 1, 3 * d - 1)[:, None]
    return jnp.concatenate([const(fmt.FACTS), facts, const(fmt.END_FACTS, fmt.QUESTION), query_slot, const(fmt.DOT, fmt.END_QUESTION, fmt.ANSWER)], axis=1)


@functools.partial(jax.jit, static_argnums=(1,))
def build(latent: Latent, cfg: ProblemConfig) -> Batch:
    """Tokens, answer mask and metadata of a batch of latents."""
    d, n = cfg.depth, fmt.num_rules(cfg.depth)
    tab = {k: jnp.asarray(v) for k, v in templates.tables(d).items()}
    lat = latent
    b = lat.letters.shape[0]
    t1, t2, tc = lat.truth[:, 0], lat.truth[:, 1], lat.truth[:, 2]
    answer = templates.answer_variant(lat.query_logop, lat.is_and, t1, t2, tc, lat.operands_swapped)
    logop_index = 2 * (d - 2)
    inverse_rules = _inverse(lat.rule_order, n)
    k = inverse_rules[:, logop_index]  # written slot of the LogOp rule, the only one of 6 tokens
    n_logop = fmt.num_logop_chain_rules(d)
    logop_chain_first = jnp.min(inverse_rules[:, :n_logop], axis=1) < jnp.min(inverse_rules[:, n_logop:], axis=1)
    if not cfg.shuffle_rules:
        # One row per choice of everything but the letters.
        variant = templates.problem_variant(answer, logop_chain_first, templates.fact_order_index(lat.fact_order))
        symbols = tab["problems"][variant]
    else:
        symbols = jnp.concatenate([_shuffled_rules(lat, tab, k, d), _facts_and_question(lat, d), tab["answers"][answer]], axis=1)
    tokens = jnp.where(symbols < 3 * d, jnp.take_along_axis(lat.letters, jnp.minimum(symbols, 3 * d - 1), axis=1), symbols - 3 * d)

    context_len = fmt.context_len(d)
    answer_len = tab["answer_len"][answer]
    pos = jnp.arange(fmt.seq_len(d))[None, :]
    written_start = fmt.RULE_LEN * inverse_rules + (fmt.LOGOP_RULE_LEN - fmt.RULE_LEN) * (inverse_rules > k[:, None])
    rule_pos = written_start.astype(jnp.int32)
    return Batch(
        tokens=tokens.astype(jnp.int32),
        answer_mask=(pos >= context_len) & (pos < context_len + answer_len[:, None]),
        answer_len=answer_len,
        first_answer=jnp.take_along_axis(lat.letters, tab["first_slot"][answer][:, None], axis=1)[:, 0],
        case=jnp.where(lat.query_logop, 1 + 4 * lat.is_and + 2 * (~t1) + (~t2), 0).astype(jnp.int32),
        query_pos=jnp.full((b,), fmt.query_pos(d), jnp.int32),
        answer_pos=jnp.full((b,), fmt.answer_pos(d), jnp.int32),
        rule_pos=rule_pos,
        fact_pos=(fmt.rules_len(d) + 1 + fmt.FACT_LEN * _inverse(lat.fact_order, 3)).astype(jnp.int32),
        logop_chain_first=logop_chain_first,
        latent=lat,
    )


@functools.partial(jax.jit, static_argnums=(1, 2))
def sample(key: jax.Array, cfg: ProblemConfig, batch_size: int) -> Batch:
    """A batch of ``batch_size`` problems drawn from ``cfg``, deterministic in ``key``."""
    return build(sample_latents(key, cfg, batch_size), cfg)


@functools.partial(jax.jit, static_argnums=(1, 3))
def sample_indexed(key: jax.Array, cfg: ProblemConfig, start: int | jax.Array, num: int) -> Batch:
    """Problems ``start .. start + num - 1`` of ``key``'s stream: problem i is drawn from ``fold_in(key, i)``.

    Problem i depends on ``key`` and ``i`` only, so files written in chunks of any size, or longer
    files, hold the same problems (launch/sample.py). Training uses ``sample``: one key a batch.
    """
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(num))
    one_each = jax.vmap(lambda k: sample(k, cfg, 1))(keys)
    return jax.tree_util.tree_map(lambda x: x[:, 0], one_each)
