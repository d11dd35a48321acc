"""The problem format of ``shared/docs/problem.md``, in one place.

Everything that reads or writes problems (the JAX sampler, the Python oracle, the English
renderer, the LLM prompt builder, the trainer's masks) takes the vocabulary, the layout and
the lengths from here.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

# --- Vocabulary -------------------------------------------------------------------------
NUM_LETTERS = 26  # ids 0-25 are the variables A-Z
PAD = 26
AND = 27
OR = 28
NOT = 29  # reserved, never sampled
IF = 30  # reserved
IMPLIES = 31
START_RULE = 32  # reserved
END_RULE = 33  # reserved
FACTS = 34
END_FACTS = 35
TRUE = 36
FALSE = 37
UNDETERMINED = 38
QUESTION = 39
END_QUESTION = 40
DOT = 41
ANSWER = 42
SEMI = 43
EOS = 44
VOCAB_SIZE = 45

TOKEN_NAMES: dict[int, str] = {i: chr(ord("A") + i) for i in range(NUM_LETTERS)}
TOKEN_NAMES.update({
    PAD: "PAD", AND: "AND", OR: "OR", NOT: "NOT", IF: "IF", IMPLIES: "IMPLIES",
    START_RULE: "START_RULE", END_RULE: "END_RULE", FACTS: "FACTS", END_FACTS: "END_FACTS",
    TRUE: "TRUE", FALSE: "FALSE", UNDETERMINED: "UNDETERMINED", QUESTION: "QUESTION",
    END_QUESTION: "END_QUESTION", DOT: ".", ANSWER: "ANSWER", SEMI: ";", EOS: "EOS",
})

# English words of problem.md; None means the token is dropped from the text.
ENGLISH: dict[int, str | None] = {i: chr(ord("A") + i) for i in range(NUM_LETTERS)}
ENGLISH.update({
    PAD: None, AND: "and", OR: "or", IMPLIES: "implies", FACTS: "Facts:", END_FACTS: None,
    TRUE: "is true", FALSE: "is false", UNDETERMINED: "is undetermined",
    QUESTION: "Question: state the truth value of", END_QUESTION: None, DOT: ".",
    ANSWER: "Answer:", SEMI: ";", EOS: None,
})
NO_SPACE_BEFORE = (".", ",", ":", ";")
RULES_PREFIX = "Rules:"

# --- Cases: which answer the proof takes ------------------------------------------------
# 0 is a linear query; 1-8 a LogOp query, by operator and the (first, second) operand's
# source truth values, as in problem.md's table.
CASE_NAMES = (
    "linear",
    "OR TT", "OR TF", "OR FT", "OR FF",
    "AND TT", "AND TF", "AND FT", "AND FF",
)


def case_id(query_logop: bool, is_and: bool, truth_first: bool, truth_second: bool) -> int:
    if not query_logop:
        return 0
    return 1 + 4 * int(is_and) + 2 * int(not truth_first) + int(not truth_second)


def branches_used(is_and: bool, truth_first: bool, truth_second: bool) -> tuple[bool, bool]:
    """Which operand branches the minimal proof writes out (problem.md's table).

    The branch whose source decides the operator (TRUE for OR, FALSE for AND) suffices; the
    first such one wins a tie; when none decides, both are needed.
    """
    deciding = not is_and
    first, second = truth_first == deciding, truth_second == deciding
    if first:
        return True, False
    if second:
        return False, True
    return True, True


class ParseError(ValueError):
    """A token sequence that is not a well-formed problem; the message says where."""


# --- Layout and lengths ------------------------------------------------------------------
MIN_DEPTH, MAX_DEPTH = 2, 8  # 3 letters per level must fit in 26
RULE_LEN = 4  # p IMPLIES q .
LOGOP_RULE_LEN = 6  # x OP y IMPLIES z .
FACT_LEN = 3  # var TRUE|FALSE .
STEP_LEN = 7  # p IMPLIES q ; q V .
LOGOP_STEP_LEN = 9  # x OP y IMPLIES z ; z V .


def num_rules(depth: int) -> int:
    """2(d-2) LogOp-chain implications, the LogOp rule, d-1 linear implications."""
    return 3 * depth - 4


def num_logop_chain_rules(depth: int) -> int:
    """2(d-2) implications and the LogOp rule: canonical rules below this index are the LogOp chain's."""
    return 2 * depth - 3


def rules_len(depth: int) -> int:
    return RULE_LEN * (num_rules(depth) - 1) + LOGOP_RULE_LEN


def context_len(depth: int) -> int:
    """Rules, FACTS, 3 facts, END_FACTS, QUESTION, query, '.', END_QUESTION, ANSWER."""
    return rules_len(depth) + 1 + 3 * FACT_LEN + 1 + 5


def answer_len(depth: int, query_logop: bool, two_branches: bool) -> int:
    """Proof length including EOS."""
    if not query_logop:
        return FACT_LEN + STEP_LEN * (depth - 1) + 1
    if not two_branches:
        return FACT_LEN + STEP_LEN * (depth - 2) + LOGOP_STEP_LEN + 1
    return FACT_LEN + 2 + 2 * STEP_LEN * (depth - 2) + LOGOP_STEP_LEN + 1


def max_answer_len(depth: int) -> int:
    return max(answer_len(depth, False, False), answer_len(depth, True, True))


def seq_len(depth: int) -> int:
    """Length of the fixed-shape token arrays: the longest problem of this depth."""
    return context_len(depth) + max_answer_len(depth)


def query_pos(depth: int) -> int:
    """Position of the queried letter (the QUERY token of the paper)."""
    return rules_len(depth) + 1 + 3 * FACT_LEN + 1 + 1


def answer_pos(depth: int) -> int:
    """Position of the ANSWER token, the last of the context; it predicts the first answer token."""
    return context_len(depth) - 1


def facts_pos(depth: int) -> int:
    """Position of the FACTS token."""
    return rules_len(depth)


def depth_of_context(length: int) -> int:
    """Inverse of ``context_len``; raises on a length no depth has."""
    for depth in range(MIN_DEPTH, MAX_DEPTH + 1):
        if context_len(depth) == length:
            return depth
    valid = {d: context_len(d) for d in range(MIN_DEPTH, MAX_DEPTH + 1)}
    raise ParseError(f"context of length {length} matches no depth (lengths by depth: {valid})")


# --- Parsed form -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Rule:
    premises: tuple[int, ...]  # one letter, or two for a LogOp rule
    op: int | None  # AND, OR, or None
    conclusion: int

    def tokens(self) -> list[int]:
        if self.op is None:
            return [self.premises[0], IMPLIES, self.conclusion, DOT]
        return [self.premises[0], self.op, self.premises[1], IMPLIES, self.conclusion, DOT]


@dataclasses.dataclass(frozen=True)
class Context:
    rules: tuple[Rule, ...]
    facts: tuple[tuple[int, bool], ...]  # (letter, value) in written order
    query: int

    @property
    def depth(self) -> int:
        return (len(self.rules) + 4) // 3

    def tokens(self) -> list[int]:
        out = [t for r in self.rules for t in r.tokens()]
        out.append(FACTS)
        for letter, value in self.facts:
            out += [letter, TRUE if value else FALSE, DOT]
        out += [END_FACTS, QUESTION, self.query, DOT, END_QUESTION, ANSWER]
        return out


def _name(token: int) -> str:
    return TOKEN_NAMES.get(int(token), f"<id {int(token)}>")


def is_letter(token: int) -> bool:
    return 0 <= int(token) < NUM_LETTERS


def parse_context(tokens: Sequence[int]) -> Context:
    """Parse context ids (rules ... ANSWER) into a ``Context``; the depth is not checked here."""
    toks = [int(t) for t in tokens]
    i = 0

    def expect(cond: bool, what: str) -> None:
        if not cond:
            got = _name(toks[i]) if i < len(toks) else "end of context"
            raise ParseError(f"position {i}: expected {what}, got {got}")

    def letter() -> int:
        nonlocal i
        expect(i < len(toks) and is_letter(toks[i]), "a variable A-Z")
        i += 1
        return toks[i - 1]

    def token(t: int) -> None:
        nonlocal i
        expect(i < len(toks) and toks[i] == t, _name(t))
        i += 1

    rules = []
    while i < len(toks) and toks[i] != FACTS:
        first = letter()
        expect(i < len(toks) and toks[i] in (IMPLIES, AND, OR), "IMPLIES, AND or OR")
        if toks[i] == IMPLIES:
            i += 1
            rules.append(Rule((first,), None, letter()))
        else:
            op = toks[i]
            i += 1
            second = letter()
            token(IMPLIES)
            rules.append(Rule((first, second), op, letter()))
        token(DOT)
    token(FACTS)
    facts = []
    while i < len(toks) and toks[i] != END_FACTS:
        var = letter()
        expect(i < len(toks) and toks[i] in (TRUE, FALSE), "TRUE or FALSE")
        facts.append((var, toks[i] == TRUE))
        i += 1
        token(DOT)
    token(END_FACTS)
    token(QUESTION)
    query = letter()
    token(DOT)
    token(END_QUESTION)
    token(ANSWER)
    if i != len(toks):
        raise ParseError(f"position {i}: expected the end of the context after ANSWER, got {_name(toks[i])}")
    return Context(tuple(rules), tuple(facts), query)


# --- Text ---------------------------------------------------------------------------------
def render_tokens(tokens: Sequence[int]) -> str:
    """Words joined by single spaces, no space before . , : ;"""
    text = ""
    for t in tokens:
        word = ENGLISH.get(int(t))
        if word is None:
            continue
        if text and not word.startswith(NO_SPACE_BEFORE):
            text += " "
        text += word
    return text


def render(context: Sequence[int], answer: Sequence[int] | None = None) -> str:
    """English rendering: ``Rules: ... Question: ... Answer:`` and, when given, the proof."""
    body = render_tokens(list(context) + ([] if answer is None else list(answer)))
    return f"{RULES_PREFIX} {body}"
