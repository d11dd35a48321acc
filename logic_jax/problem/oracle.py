"""The reference oracle, in plain Python: the minimal proof of a context, and answer checking.

It reads nothing but the context: it finds the two chains from the rules, derives the proof
with problem.md's semantics and tie rule, and classifies a wrong answer. The JAX sampler is
tested against it; evaluation uses ``classify``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from logic_jax.problem import format as fmt
from logic_jax.problem.format import ParseError

# Error classes of a wrong answer, most basic first.
CORRECT = "correct"
MALFORMED = "malformed"  # not a sentence sequence of the proof grammar ending with EOS
WRONG_FIRST_TOKEN = "wrong_first_token"  # starts from a letter that is no proof's source
WRONG_BRANCH = "wrong_branch"  # LogOp: writes out another set of branches than the minimal proof
WRONG_TRUTH_VALUE = "wrong_truth_value"  # the right steps with a wrong TRUE/UNDETERMINED/FALSE
WRONG_STEP = "wrong_step"  # well formed, right branches, but a step that is not the proof's
ERROR_CLASSES = (CORRECT, MALFORMED, WRONG_FIRST_TOKEN, WRONG_BRANCH, WRONG_TRUTH_VALUE, WRONG_STEP)


@dataclasses.dataclass(frozen=True)
class Structure:
    """The chains a context's rules form, recovered from the rules alone."""

    depth: int
    first: tuple[int, ...]  # the LogOp rule's first operand's branch, source first (d-1 letters)
    second: tuple[int, ...]  # the second operand's branch
    linear: tuple[int, ...]  # c_0 .. c_{d-1}
    op: int  # fmt.AND or fmt.OR
    conclusion: int  # a_{d-1}
    facts: dict  # letter -> bool
    query: int

    @property
    def query_logop(self) -> bool:
        return self.query == self.conclusion


def _chain_back(end: int, parent: dict, length: int, where: str) -> tuple[int, ...]:
    """Follow single-premise rules back from ``end`` to a chain of ``length`` letters."""
    chain = [end]
    while chain[0] in parent:
        chain.insert(0, parent[chain[0]])
        if len(chain) > length:
            break
    if len(chain) != length:
        raise ParseError(f"{where}: chain ending at {fmt.TOKEN_NAMES[end]} has {len(chain)} letters, expected {length}")
    return tuple(chain)


def structure(context: Sequence[int]) -> Structure:
    """Parse and check a context: the depth, two disjoint chains, the facts, the query."""
    toks = [int(t) for t in context]
    depth = fmt.depth_of_context(len(toks))
    ctx = fmt.parse_context(toks)
    logops = [r for r in ctx.rules if r.op is not None]
    if len(logops) != 1:
        raise ParseError(f"rules: expected exactly one AND/OR rule, found {len(logops)}")
    if len(ctx.rules) != fmt.num_rules(depth):
        raise ParseError(f"rules: expected {fmt.num_rules(depth)} rules at depth {depth}, found {len(ctx.rules)}")
    logop = logops[0]
    parent = {}
    for r in ctx.rules:
        if r.op is None:
            if r.conclusion in parent:
                raise ParseError(f"rules: {fmt.TOKEN_NAMES[r.conclusion]} is the conclusion of two rules")
            parent[r.conclusion] = r.premises[0]
    first = _chain_back(logop.premises[0], parent, depth - 1, "LogOp rule's first operand")
    second = _chain_back(logop.premises[1], parent, depth - 1, "LogOp rule's second operand")
    concluded = set(parent) | {logop.conclusion}
    ends = [r.conclusion for r in ctx.rules if r.op is None and r.conclusion not in parent.values() and r.conclusion not in logop.premises]
    if len(ends) != 1:
        raise ParseError(f"rules: expected one linear chain end, found {[fmt.TOKEN_NAMES[e] for e in ends]}")
    linear = _chain_back(ends[0], parent, depth, "linear chain")
    letters = list(first) + list(second) + list(linear) + [logop.conclusion]
    if len(set(letters)) != len(letters):
        raise ParseError("rules: the chains share a letter")
    if len(letters) != len(concluded) + 3:
        raise ParseError("rules: a rule belongs to neither chain")
    facts = dict(ctx.facts)
    sources = {first[0], second[0], linear[0]}
    if len(ctx.facts) != 3 or set(facts) != sources:
        names = sorted(fmt.TOKEN_NAMES[s] for s in sources)
        raise ParseError(f"facts: expected one fact for each chain source {names}, got {[fmt.TOKEN_NAMES[f] for f, _ in ctx.facts]}")
    if ctx.query not in (logop.conclusion, linear[-1]):
        raise ParseError(f"query: {fmt.TOKEN_NAMES[ctx.query]} ends neither chain")
    return Structure(depth, first, second, linear, logop.op, logop.conclusion, facts, ctx.query)


def _value(truth: bool) -> int:
    return fmt.TRUE if truth else fmt.UNDETERMINED


def _fact(truth: bool) -> int:
    return fmt.TRUE if truth else fmt.FALSE


def _step(p: int, q: int, truth: bool) -> list[int]:
    return [p, fmt.IMPLIES, q, fmt.SEMI, q, _value(truth), fmt.DOT]


def proof_of(s: Structure) -> list[int]:
    """The minimal proof of problem.md, EOS included."""
    if not s.query_logop:
        t = s.facts[s.linear[0]]
        out = [s.linear[0], _fact(t), fmt.DOT]
        for p, q in zip(s.linear, s.linear[1:]):
            out += _step(p, q, t)
        return out + [fmt.EOS]
    t1, t2 = s.facts[s.first[0]], s.facts[s.second[0]]
    use1, use2 = fmt.branches_used(s.op == fmt.AND, t1, t2)
    branches = [(s.first, t1)] * use1 + [(s.second, t2)] * use2
    out = []
    for chain, t in branches:
        out += [chain[0], _fact(t)]
    out.append(fmt.DOT)
    for level in range(s.depth - 2):
        for chain, t in branches:
            out += _step(chain[level], chain[level + 1], t)
    conclusion = (t1 and t2) if s.op == fmt.AND else (t1 or t2)
    x, y = s.first[-1], s.second[-1]
    out += [x, s.op, y, fmt.IMPLIES, s.conclusion, fmt.SEMI, s.conclusion, _value(conclusion), fmt.DOT]
    return out + [fmt.EOS]


def prove(context: Sequence[int]) -> list[int]:
    """The minimal proof of a context (ids), EOS included."""
    return proof_of(structure(context))


def case_of(context: Sequence[int]) -> int:
    """Index into ``format.CASE_NAMES``."""
    s = structure(context)
    return fmt.case_id(s.query_logop, s.op == fmt.AND, s.facts[s.first[0]], s.facts[s.second[0]])


def _sentences(answer: Sequence[int]) -> list[tuple[int, ...]] | None:
    """Split at '.', up to EOS; None if the answer does not end with '.' EOS."""
    toks = [int(t) for t in answer]
    if fmt.EOS not in toks:
        return None
    toks = toks[: toks.index(fmt.EOS)]
    if not toks or toks[-1] != fmt.DOT:
        return None
    out, cur = [], []
    for t in toks:
        if t == fmt.DOT:
            out.append(tuple(cur))
            cur = []
        else:
            cur.append(t)
    return out


_VALUES = (fmt.TRUE, fmt.FALSE, fmt.UNDETERMINED)


def _well_formed(sentences: list[tuple[int, ...]]) -> bool:
    """The grammar: a facts sentence (``s V`` one or more times), then steps; letters where letters go,
    truth values (any of the three: a wrong one is a wrong truth value, not bad grammar) where values go."""
    L, V = fmt.is_letter, _VALUES
    head = sentences[0]
    if not head or len(head) % 2 or not all(L(head[i]) and head[i + 1] in V for i in range(0, len(head), 2)):
        return False
    for s in sentences[1:]:
        if len(s) == 6:
            ok = L(s[0]) and s[1] == fmt.IMPLIES and L(s[2]) and s[3] == fmt.SEMI and s[4] == s[2] and s[5] in V
        elif len(s) == 8:
            ok = L(s[0]) and s[1] in (fmt.AND, fmt.OR) and L(s[2]) and s[3] == fmt.IMPLIES and L(s[4]) and s[5] == fmt.SEMI and s[6] == s[4] and s[7] in V
        else:
            ok = False
        if not ok:
            return False
    return True


def _sources(s: Structure) -> set[int]:
    return {s.first[0], s.second[0], s.linear[0]}


def classify(context: Sequence[int], answer: Sequence[int]) -> str:
    """Classify an answer (ids, up to and including EOS; anything after EOS is ignored).

    Checked in order: ``correct``; ``malformed`` (not sentences of the proof grammar ending in
    '.' EOS); ``wrong_first_token`` (the first letter is no chain source, or another chain's
    source than the queried one's); ``wrong_branch`` (LogOp: the set of branches written out
    differs from the minimal proof's; the right set in another order is a wrong step);
    ``wrong_truth_value`` (the same tokens but for a truth value); else ``wrong_step``.
    """
    s = structure(context)
    expected = proof_of(s)
    toks = [int(t) for t in answer]
    if fmt.EOS in toks:
        toks = toks[: toks.index(fmt.EOS) + 1]
    if toks == expected:
        return CORRECT
    sentences = _sentences(toks)
    if not sentences or not _well_formed(sentences):
        return MALFORMED
    if s.query_logop and toks[0] in (s.first[0], s.second[0]):
        # Branches as a set: both branches in the other order is a wrong step, not a wrong branch.
        if set(sentences[0][0::2]) != set(_sentences(expected)[0][0::2]):
            return WRONG_BRANCH
    elif toks[0] != expected[0]:
        return WRONG_FIRST_TOKEN
    if len(toks) == len(expected) and all(a == b or (a in _VALUES and b in _VALUES) for a, b in zip(toks, expected)):
        return WRONG_TRUTH_VALUE
    return WRONG_STEP


def validate(context: Sequence[int], answer: Sequence[int]) -> bool:
    """Whether ``answer`` is the minimal proof of ``context``."""
    return classify(context, answer) == CORRECT
