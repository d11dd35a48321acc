"""A plain per-problem Python sampler of problem.md: the baseline of bench/sampler.py.

It is what one would write without JAX: the standard ``random`` module, one problem at a
time, tokens built in lists. It draws the same distribution as the JAX sampler (unshuffled
rules) and reads the vocabulary from ``logic_jax.problem.format``; bench/sampler.py checks
its output with the oracle.
"""

import random

from logic_jax.problem import format as fmt


def _step(p, q, truth):
    return [p, fmt.IMPLIES, q, fmt.SEMI, q, fmt.TRUE if truth else fmt.UNDETERMINED, fmt.DOT]


def sample_problem(rng: random.Random, depth: int = 3, p_logop: float = 0.8, p_and: float = 0.5):
    """(context, answer, case): the id lists of one problem and its index in format.CASE_NAMES."""
    d = depth
    letters = rng.sample(range(fmt.NUM_LETTERS), 3 * d)
    a, b, c = letters[:d], letters[d : 2 * d], letters[2 * d :]
    is_and = rng.random() < p_and
    op = fmt.AND if is_and else fmt.OR
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    logop_chain = []
    for i in range(d - 2):
        logop_chain += [a[i], fmt.IMPLIES, a[i + 1], fmt.DOT, b[i], fmt.IMPLIES, b[i + 1], fmt.DOT]
    logop_chain += [first[d - 2], op, second[d - 2], fmt.IMPLIES, a[d - 1], fmt.DOT]
    linear_chain = []
    for i in range(d - 1):
        linear_chain += [c[i], fmt.IMPLIES, c[i + 1], fmt.DOT]
    rules = logop_chain + linear_chain if rng.random() < 0.5 else linear_chain + logop_chain
    truth = {a[0]: rng.random() < 0.5, b[0]: rng.random() < 0.5, c[0]: rng.random() < 0.5}
    facts = [a[0], b[0], c[0]]
    rng.shuffle(facts)
    query_logop = rng.random() < p_logop
    context = rules + [fmt.FACTS]
    for f in facts:
        context += [f, fmt.TRUE if truth[f] else fmt.FALSE, fmt.DOT]
    query = a[d - 1] if query_logop else c[d - 1]
    context += [fmt.END_FACTS, fmt.QUESTION, query, fmt.DOT, fmt.END_QUESTION, fmt.ANSWER]

    if not query_logop:
        t = truth[c[0]]
        answer = [c[0], fmt.TRUE if t else fmt.FALSE, fmt.DOT]
        for i in range(d - 1):
            answer += _step(c[i], c[i + 1], t)
        return context, answer + [fmt.EOS], 0
    t1, t2 = truth[first[0]], truth[second[0]]
    use1, use2 = fmt.branches_used(is_and, t1, t2)
    branches = [(first, t1)] * use1 + [(second, t2)] * use2
    answer = []
    for chain, t in branches:
        answer += [chain[0], fmt.TRUE if t else fmt.FALSE]
    answer.append(fmt.DOT)
    for i in range(d - 2):
        for chain, t in branches:
            answer += _step(chain[i], chain[i + 1], t)
    value = (t1 and t2) if is_and else (t1 or t2)
    answer += [first[d - 2], op, second[d - 2], fmt.IMPLIES, a[d - 1], fmt.SEMI, a[d - 1], fmt.TRUE if value else fmt.UNDETERMINED, fmt.DOT]
    return context, answer + [fmt.EOS], fmt.case_id(True, is_and, t1, t2)


def sample_arrays(seed: int, num: int, depth: int = 3):
    """``num`` problems as the JAX sampler returns them: padded token rows, the answer mask,
    the first answer token and the case, as numpy arrays."""
    import numpy as np

    rng = random.Random(seed)
    length, context_len = fmt.seq_len(depth), fmt.context_len(depth)
    rows, answer_lens, firsts, cases = [], [], [], []
    for _ in range(num):
        context, answer, case = sample_problem(rng, depth)
        rows.append(context + answer + [fmt.PAD] * (length - len(context) - len(answer)))
        answer_lens.append(len(answer))
        firsts.append(answer[0])
        cases.append(case)
    tokens = np.array(rows, np.int32)
    pos = np.arange(length)[None, :]
    answer_len = np.array(answer_lens, np.int32)
    answer_mask = (pos >= context_len) & (pos < context_len + answer_len[:, None])
    return dict(tokens=tokens, answer_mask=answer_mask, answer_len=answer_len, first_answer=np.array(firsts, np.int32), case=np.array(cases, np.int32))
