"""Tokenize prompt pairs and check the protocol on the token level; find the token spans.

For each pair, with the model's tokenizer (``models.mistral.Tokenizer``: encode adds BOS):

* the tokenizer reproduces each prompt's text (decode(encode(text)) == text), so that char
  offsets map to tokens;
* both prompts have the same number of tokens (patching is position to position);
* each target letter is ONE token right after ``Answer:`` (the token the model must emit, read
  from tokenizing the prompt followed by the proof, so merges are as in generation), and the
  same id in both prompts;
* QUERY (the question's query letter) is one token, at the same index in both prompts.

A prompt that breaks any of these raises ``PromptCheckError`` naming the pair, the prompt and
the offending letter: never a silent skip. The spans for attention statistics are token
index tuples of the clean prompt (see ``SPANS``).
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Sequence

from logic_jax.llm.prompts import PromptPair, Problem
from logic_jax.problem import format as fmt

# Spans of the question line, for the attention statistics of chosen heads.
SPANS = (
    "queried_rule",  # the rule whose conclusion is the query letter, "H implies W."
    "conclusion",  # that rule's conclusion letter
    "rule_first_letter",  # that rule's first letter
    "query",  # QUERY: the letter after "truth value of"
    "facts",  # "Facts: ... ." (the three facts)
    "correct_fact",  # the fact sentence of the first answer letter, "H is true."
    "correct_fact_letter",  # its letter
)


class PromptCheckError(ValueError):
    """A prompt that the tokenizer breaks; the message names the pair, the prompt and the letter."""


@dataclasses.dataclass(frozen=True)
class TokenizedPair:
    clean_ids: tuple[int, ...]  # BOS included
    cf_ids: tuple[int, ...]
    clean_target: int  # token id of pair.clean_target (the letter after "Answer:")
    cf_target: int
    query_index: int  # QUERY's index in both prompts
    clean_proof_ids: tuple[int, ...]  # the tokens of " <proof>" after the clean prompt
    cf_proof_ids: tuple[int, ...]
    spans: dict  # name -> tuple of token indices in the clean prompt

    @property
    def length(self) -> int:
        return len(self.clean_ids)


def _pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


class _Offsets:
    """Char end offsets of a prompt's tokens, from decoding prefixes (works for any tokenizer).

    ``end(i)`` is len(decode(ids[:i + 1])); computed lazily, since only the last line matters.
    """

    def __init__(self, tokenizer, ids: Sequence[int]):
        self.tokenizer, self.ids, self._end = tokenizer, list(ids), {}

    def end(self, i: int) -> int:
        if i < 0:
            return 0
        if i not in self._end:
            self._end[i] = len(self.tokenizer.decode(self.ids[: i + 1]))
        return self._end[i]

    def token_at(self, char: int) -> int:
        """Index of the token whose decoded text covers ``char``."""
        return bisect.bisect_right(range(len(self.ids)), char, key=self.end)

    def tokens_in(self, start: int, stop: int) -> tuple[int, ...]:
        """Indices of the tokens overlapping chars [start, stop), whitespace-only tokens left out."""
        first, last = self.token_at(start), self.token_at(stop - 1)
        return tuple(i for i in range(first, last + 1) if self.tokenizer.decode([self.ids[i]]).strip())

    def text(self, i: int) -> str:
        return self.tokenizer.decode(self.ids[: i + 1])[self.end(i - 1) :]


def _encode_checked(tokenizer, text: str, where: str) -> list[int]:
    ids = list(tokenizer.encode(text))
    decoded = tokenizer.decode(ids)
    if decoded != text:
        at = next((i for i, (a, b) in enumerate(zip(decoded, text)) if a != b), min(len(decoded), len(text)))
        raise PromptCheckError(
            f"{where}: the tokenizer ({tokenizer.source}) does not reproduce the prompt: at char {at} the text has "
            f"{text[at:at + 20]!r}, decode(encode(text)) has {decoded[at:at + 20]!r}"
        )
    return ids


def _letter_token(tokenizer, prompt_ids: list[int], prompt: str, continuation: str, letter: str, where: str) -> tuple[int, list[int]]:
    """The single token of ``letter`` right after the prompt, and the continuation's tokens."""
    full = list(tokenizer.encode(prompt + " " + continuation))
    if full[: len(prompt_ids)] != prompt_ids:
        raise PromptCheckError(f"{where}: the tokens of the prompt change when {continuation[:20]!r}... follows it (a merge across 'Answer:')")
    rest = full[len(prompt_ids) :]
    if not rest or tokenizer.decode([rest[0]]).strip() != letter or tokenizer.decode(prompt_ids + rest[:1]) != prompt + " " + letter:
        raise PromptCheckError(
            f"{where}: answer letter {letter!r} is not one token after 'Answer:'; the tokenizer gives "
            f"{_pieces(tokenizer, rest[:4])} for {(' ' + continuation)[:12]!r}"
        )
    return rest[0], rest


def _find(line: str, needle: str, start: int, where: str) -> int:
    at = line.find(needle, start)
    if at < 0:
        raise PromptCheckError(f"{where}: {needle!r} not found in the question line {line!r}")
    return at


def _char_spans(problem: Problem, line_start: int, question: str, where: str) -> dict[str, tuple[int, int]]:
    """Char ranges (in the whole prompt) of ``SPANS`` in the question line."""
    ctx = fmt.parse_context(problem.context)
    rule = next(r for r in ctx.rules if r.conclusion == ctx.query)
    rule_text = fmt.render_tokens(rule.tokens())
    rule_at = _find(question, " " + rule_text, 0, where) + 1
    letter = fmt.TOKEN_NAMES[ctx.query]
    facts_at = _find(question, fmt.ENGLISH[fmt.FACTS], 0, where)
    question_at = _find(question, fmt.ENGLISH[fmt.QUESTION], facts_at, where)
    query_at = _find(question, f"{fmt.ENGLISH[fmt.QUESTION]} {letter}.", question_at, where) + len(fmt.ENGLISH[fmt.QUESTION]) + 1
    first = fmt.TOKEN_NAMES[problem.first]
    fact_text = fmt.render_tokens([problem.first, fmt.TRUE if dict(ctx.facts)[problem.first] else fmt.FALSE, fmt.DOT])
    fact_at = _find(question, " " + fact_text, facts_at, where) + 1
    conclusion_at = rule_at + len(rule_text) - 2  # "... W."
    spans = {
        "queried_rule": (rule_at, rule_at + len(rule_text)),
        "conclusion": (conclusion_at, conclusion_at + 1),
        "rule_first_letter": (rule_at, rule_at + 1),
        "query": (query_at, query_at + 1),
        "facts": (facts_at, question_at - 1),
        "correct_fact": (fact_at, fact_at + len(fact_text)),
        "correct_fact_letter": (fact_at, fact_at + len(first)),
    }
    return {name: (line_start + a, line_start + b) for name, (a, b) in spans.items()}


def tokenize_pair(tokenizer, pair: PromptPair) -> TokenizedPair:
    """Tokenize and check one pair (see the module docstring); raises ``PromptCheckError``."""
    where = f"pair {pair.index} ({pair.kind})"
    texts = {"clean": pair.clean_text, "counterfactual": pair.cf_text}
    ids = {role: _encode_checked(tokenizer, text, f"{where}, {role} prompt") for role, text in texts.items()}
    if len(ids["clean"]) != len(ids["counterfactual"]):
        raise PromptCheckError(
            f"{where}: the clean prompt has {len(ids['clean'])} tokens and the counterfactual {len(ids['counterfactual'])}; "
            f"patching needs equal lengths (clean question {pair.clean.question!r}, counterfactual {pair.cf.question!r})"
        )
    problems = {"clean": pair.clean, "counterfactual": pair.cf}
    targets, proofs = {}, {}
    for role in texts:
        prefix = f"{where}, {role} prompt"
        correct, proofs[role] = _letter_token(tokenizer, ids[role], texts[role], problems[role].proof_text, problems[role].first_letter, prefix)
        # Both target letters must be single tokens with the same id after either prompt.
        for name, letter in (("clean_target", pair.clean_target), ("cf_target", pair.cf_target)):
            token = correct if letter == problems[role].first_letter else _letter_token(tokenizer, ids[role], texts[role], letter + " is", letter, prefix)[0]
            if targets.setdefault(name, token) != token:
                raise PromptCheckError(f"{prefix}: target letter {letter!r} is token {token} here but {targets[name]} after the other prompt")

    offsets = {role: _Offsets(tokenizer, ids[role]) for role in texts}
    line_start = len(pair.prefix)
    query_index = {}
    for role, problem in problems.items():
        question = problem.question
        spans = _char_spans(problem, line_start, question, f"{where}, {role} prompt")
        start, stop = spans["query"]
        index = offsets[role].token_at(start)
        if offsets[role].text(index).strip() != problem.query_letter:
            raise PromptCheckError(
                f"{where}, {role} prompt: QUERY letter {problem.query_letter!r} is not one token; it sits in token "
                f"{offsets[role].text(index)!r} at index {index}"
            )
        query_index[role] = index
        if role == "clean":
            clean_spans = {name: offsets[role].tokens_in(a, b) for name, (a, b) in spans.items()}
    if query_index["clean"] != query_index["counterfactual"]:
        raise PromptCheckError(f"{where}: QUERY is token {query_index['clean']} in the clean prompt but {query_index['counterfactual']} in the counterfactual")
    return TokenizedPair(
        clean_ids=tuple(ids["clean"]),
        cf_ids=tuple(ids["counterfactual"]),
        clean_target=targets["clean_target"],
        cf_target=targets["cf_target"],
        query_index=query_index["clean"],
        clean_proof_ids=tuple(proofs["clean"]),
        cf_proof_ids=tuple(proofs["counterfactual"]),
        spans=clean_spans,
    )


def tokenize_pairs(tokenizer, pairs: Sequence[PromptPair], positions: int | None = None) -> list[TokenizedPair]:
    """Every pair tokenized and checked; with ``positions``, QUERY must lie in the last ``positions`` tokens."""
    out = []
    for pair in pairs:
        tp = tokenize_pair(tokenizer, pair)
        if positions is not None:
            if tp.length <= positions:
                raise PromptCheckError(f"pair {pair.index}: {tp.length} tokens, not more than positions={positions}")
            from_end = tp.length - 1 - tp.query_index
            if from_end >= positions:
                raise PromptCheckError(
                    f"pair {pair.index}: QUERY is {from_end} tokens before the last one, outside the last positions={positions} "
                    "that are patched; raise --positions"
                )
        out.append(tp)
    return out

