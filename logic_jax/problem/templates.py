"""Host-side tables that let the JAX sampler build problems with gathers alone.

A problem's tokens are a function of its letters and a few discrete choices. The tables here
hold, for every value of those choices, the tokens as *symbols*: a symbol ``s < 3d`` stands
for the letter in slot ``s`` (a_0..a_{d-1}, b_0..b_{d-1}, c_0..c_{d-1}), a symbol ``3d + t``
for the constant token ``t``. The proofs come from the oracle, run once per choice on a
problem whose letters are the slot numbers themselves, so the proof rules live in one place.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from logic_jax.problem import format as fmt
from logic_jax.problem import oracle

# The 6 orders of 3 facts, indexed by a uniform draw in [0, 6).
FACT_ORDERS = np.array(list(itertools.permutations(range(3))), np.int32)


def answer_variant(query_logop, is_and, truth_first, truth_second, truth_linear, swapped):
    """Index into the answer tables (works on Python bools and on arrays)."""
    return swapped * 1 + truth_linear * 2 + truth_second * 4 + truth_first * 8 + is_and * 16 + query_logop * 32


def rule_variant(is_and, swapped):
    return swapped * 1 + is_and * 2


def fact_order_index(fact_order):
    """Index of a permutation of 3 into ``FACT_ORDERS`` (works on arrays [..., 3])."""
    return 2 * fact_order[..., 0] + (fact_order[..., 1] > fact_order[..., 2])


def problem_variant(answer_variant_, logop_chain_first, fact_order_index_):
    """Index into ``tables(d)["problems"]``: every choice of an unshuffled problem but its letters."""
    return answer_variant_ + 64 * (logop_chain_first * 1 + 2 * fact_order_index_)


def _symbols(tokens, depth):
    """Slot ids stay (they are < 3d <= 24, so they are also letter ids); constants shift by 3d."""
    return [t if fmt.is_letter(t) else 3 * depth + t for t in tokens]


def _canonical_rules(depth: int, is_and: bool, swapped: bool) -> list[fmt.Rule]:
    """Rules with letters = slot numbers, in the canonical order of ``Batch.rule_pos``."""
    d = depth
    a, b, c = list(range(d)), list(range(d, 2 * d)), list(range(2 * d, 3 * d))
    rules = []
    for i in range(d - 2):
        rules += [fmt.Rule((a[i],), None, a[i + 1]), fmt.Rule((b[i],), None, b[i + 1])]
    x, y = (b[d - 2], a[d - 2]) if swapped else (a[d - 2], b[d - 2])
    rules.append(fmt.Rule((x, y), fmt.AND if is_and else fmt.OR, a[d - 1]))
    rules += [fmt.Rule((c[i],), None, c[i + 1]) for i in range(d - 1)]
    return rules


@functools.lru_cache(maxsize=None)
def tables(depth: int) -> dict[str, np.ndarray]:
    d = depth
    n = fmt.num_rules(d)
    pad = 3 * d + fmt.PAD

    # RULES[rule_variant, canonical rule, 6]
    rules = np.full((4, n, fmt.LOGOP_RULE_LEN), pad, np.int32)
    for is_and, swapped in itertools.product((False, True), repeat=2):
        for r, rule in enumerate(_canonical_rules(d, is_and, swapped)):
            toks = _symbols(rule.tokens(), d)
            rules[rule_variant(is_and, swapped), r, : len(toks)] = toks

    # Where each position of the rules section reads from, given the written slot k of the
    # LogOp rule (the only rule of 6 tokens): RULE_SLOT[k, t], RULE_OFFSET[k, t].
    length = fmt.rules_len(d)
    rule_slot = np.zeros((n, length), np.int32)
    rule_offset = np.zeros((n, length), np.int32)
    for k in range(n):
        lens = [fmt.LOGOP_RULE_LEN if j == k else fmt.RULE_LEN for j in range(n)]
        t = 0
        for j, size in enumerate(lens):
            rule_slot[k, t : t + size] = j
            rule_offset[k, t : t + size] = np.arange(size)
            t += size

    # ANSWER[answer_variant, max_answer_len], its length and first symbol, from the oracle.
    width = fmt.max_answer_len(d)
    answers = np.full((64, width), pad, np.int32)
    answer_len = np.zeros(64, np.int32)
    first_slot = np.zeros(64, np.int32)
    for choice in itertools.product((False, True), repeat=6):
        query_logop, is_and, t1, t2, tc, swapped = choice
        truth_ab = (t2, t1) if swapped else (t1, t2)
        facts = ((0, truth_ab[0]), (d, truth_ab[1]), (2 * d, tc))
        query = d - 1 if query_logop else 3 * d - 1
        context = fmt.Context(tuple(_canonical_rules(d, is_and, swapped)), facts, query)
        proof = oracle.prove(context.tokens())
        v = answer_variant(*choice)
        answers[v, : len(proof)] = _symbols(proof, d)
        answer_len[v] = len(proof)
        first_slot[v] = proof[0]

    # PROBLEMS[problem_variant, seq_len]: whole unshuffled problems, context from format.Context.
    problems = np.full((64 * 2 * len(FACT_ORDERS), fmt.seq_len(d)), pad, np.int32)
    for choice in itertools.product((False, True), repeat=6):
        query_logop, is_and, t1, t2, tc, swapped = choice
        canonical = _canonical_rules(d, is_and, swapped)
        n_logop = fmt.num_logop_chain_rules(d)
        truth_abc = {0: (t2, t1)[not swapped], d: (t1, t2)[not swapped], 2 * d: tc}
        v = answer_variant(*choice)
        for chain_first, (f, order) in itertools.product((False, True), enumerate(FACT_ORDERS)):
            written = canonical if chain_first else canonical[n_logop:] + canonical[:n_logop]
            sources = [(0, d, 2 * d)[i] for i in order]
            context = fmt.Context(tuple(written), tuple((s, truth_abc[s]) for s in sources), d - 1 if query_logop else 3 * d - 1)
            row = _symbols(context.tokens(), d) + list(answers[v, : answer_len[v]])
            problems[problem_variant(v, chain_first, f), : len(row)] = row
    return dict(
        rules=rules, rule_slot=rule_slot, rule_offset=rule_offset,
        answers=answers, answer_len=answer_len, first_slot=first_slot, problems=problems,
    )
