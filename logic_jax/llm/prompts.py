"""The LLM prompts of problem.md ("The LLM prompt") and their clean / counterfactual pairs.

A prompt is ``shots`` in-context examples, one per line (``Rules: ... Answer: <proof>``), then
the question line ending at ``Answer:``. Every problem is depth 2, drawn by the JAX sampler
(``ProblemConfig`` ``fix_*`` fields, then latent edits) and rendered by ``format.render``;
every proof comes from ``oracle.prove``.

The authors' example form, and what we fix with it:

* half the examples (``shots // 2``) query the LogOp chain, the rest the linear chain, in a
  seeded random order;
* every example uses OR, the first operand's source TRUE, the second's source TRUE or FALSE
  (one choice per prompt: ``example_truths`` "TT", "TF", or None for a coin per prompt), and a
  TRUE linear source. These values hold in every example, whichever chain it queries;
* only the question has free truth values (its operator is ``question_op``, OR by default).

Pair kinds (the question changes, the examples do not):

* ``query``: the query letter switched between the LogOp conclusion and the linear one; the
  two first answer tokens always differ.
* ``fact``: one source fact flipped, the first one (first operand's, second's, linear) whose
  flip changes the first answer token. The question queries the LogOp chain (a linear answer
  never changes with a fact). A question where no single flip changes the first token (OR
  TF, AND FT) is redrawn, never emitted.
* ``rule_order``: the two rules of the question written in the other order. The first answer
  token does not change, so the clean-vs-counterfactual logit difference would be 0 by
  construction; this kind's targets are defined as (the correct first token, the foil = the
  first token the other chain's query would start with), the same two tokens in both prompts.
  Its effects are reported as raw changes of that LD (see ``sweeps.py``).

``build_pairs(seed, n, ...)`` is a function of its arguments only: pair ``i`` is drawn from
``fold_in(key(seed), i)``, so the first pairs do not depend on ``n``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from logic_jax.interp import pairs as pair_edits
from logic_jax.problem import format as fmt
from logic_jax.problem import oracle
from logic_jax.problem.config import ProblemConfig
from logic_jax.problem.sampler import build, sample_latents

PAIR_KINDS = ("query", "fact", "rule_order")
DEPTH = 2
MAX_REDRAWS = 64  # per pair, for the fact kind (a redraw succeeds with probability >= 1/2)


class PromptError(ValueError):
    """A prompt or pair that breaks the protocol; the message names the prompt and what is wrong."""


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    shots: int = 6
    kind: str = "query"
    example_truths: str | None = None  # "TT", "TF", or None: a coin per prompt
    question_op: str = "or"  # "or", "and", or "any" (p_and 0.5)
    p_logop: float = 0.5  # the clean question queries the LogOp chain (kinds query, rule_order)

    def __post_init__(self):
        if self.kind not in PAIR_KINDS:
            raise PromptError(f"unknown pair kind {self.kind!r}; choose one of {PAIR_KINDS}")
        if not isinstance(self.shots, int) or self.shots < 0:
            raise PromptError(f"shots must be an int >= 0, got {self.shots!r}")
        if self.example_truths not in (None, "TT", "TF"):
            raise PromptError(f"example_truths must be None, 'TT' or 'TF', got {self.example_truths!r}")
        if self.question_op not in ("or", "and", "any"):
            raise PromptError(f"question_op must be 'or', 'and' or 'any', got {self.question_op!r}")
        if not 0.0 <= self.p_logop <= 1.0:
            raise PromptError(f"p_logop must be in [0, 1], got {self.p_logop!r}")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One depth-2 problem: problem-vocabulary ids, its proof, and its English line."""

    context: tuple[int, ...]  # rules ... ANSWER
    proof: tuple[int, ...]  # oracle.prove(context), EOS included
    case: int  # index into format.CASE_NAMES

    @property
    def first(self) -> int:
        return self.proof[0]

    @property
    def first_letter(self) -> str:
        return fmt.TOKEN_NAMES[self.first]

    @property
    def query_letter(self) -> str:
        return fmt.TOKEN_NAMES[self.context[fmt.query_pos(DEPTH)]]

    @property
    def question(self) -> str:
        """The question line: ``Rules: ... Answer:``."""
        return fmt.render(self.context)

    @property
    def proof_text(self) -> str:
        return fmt.render_tokens(self.proof)

    @property
    def example(self) -> str:
        """The line of an in-context example: the question and its proof."""
        return fmt.render(self.context, self.proof)


@dataclasses.dataclass(frozen=True)
class PromptPair:
    """A clean and a counterfactual prompt that share their examples and differ in the question."""

    index: int
    kind: str
    examples: tuple[Problem, ...]
    clean: Problem
    cf: Problem
    clean_target: str  # the letter whose logit is the LD's plus side
    cf_target: str  # the letter on the minus side
    fact_source: int | None = None  # kind "fact": 0 first operand's source, 1 second's, 2 linear

    @property
    def prefix(self) -> str:
        """The example lines, each ending with a newline."""
        return "".join(p.example + "\n" for p in self.examples)

    @property
    def clean_text(self) -> str:
        return self.prefix + self.clean.question

    @property
    def cf_text(self) -> str:
        return self.prefix + self.cf.question


def _problem(context: Sequence[int], sampled_answer: Sequence[int], where: str) -> Problem:
    context = tuple(int(t) for t in context)
    proof = tuple(oracle.prove(context))
    answer = tuple(int(t) for t in sampled_answer[: len(proof)])
    if answer != proof:  # the sampler and the oracle must agree; a disagreement is a bug, not a skip
        raise PromptError(f"{where}: sampler answer {fmt.render_tokens(answer)!r} != oracle proof {fmt.render_tokens(proof)!r}")
    return Problem(context, proof, oracle.case_of(context))


def _problems(batch, where: str) -> list[Problem]:
    batch = jax.device_get(batch)
    n = fmt.context_len(DEPTH)
    return [_problem(batch.tokens[i, :n], batch.tokens[i, n:], f"{where} {i}") for i in range(batch.tokens.shape[0])]


def _examples(key: jax.Array, cfg: PromptConfig) -> tuple[Problem, ...]:
    if cfg.shots == 0:
        return ()
    truth_key, order_key, latent_key = jax.random.split(key, 3)
    second = {"TT": True, "TF": False}.get(cfg.example_truths, bool(jax.random.bernoulli(truth_key)))
    problem_cfg = ProblemConfig(depth=DEPTH, fix_op="or", fix_truth_first=True, fix_truth_second=second, fix_truth_linear=True)
    queries = np.zeros(cfg.shots, bool)
    queries[: cfg.shots // 2] = True
    queries = np.asarray(jax.random.permutation(order_key, queries))
    latent = sample_latents(latent_key, problem_cfg, cfg.shots)
    latent = latent.replace(query_logop=jax.numpy.asarray(queries))
    return tuple(_problems(build(latent, problem_cfg), "example"))


def _question_config(cfg: PromptConfig) -> ProblemConfig:
    return ProblemConfig(
        depth=DEPTH,
        p_logop=cfg.p_logop,
        fix_op=None if cfg.question_op == "any" else cfg.question_op,
        fix_query="logop" if cfg.kind == "fact" else None,
    )


def _question_pair(key: jax.Array, cfg: PromptConfig, index: int) -> tuple[Problem, Problem, int | None]:
    """(clean, cf, fact source) of one pair; redraws fact questions that no single flip changes."""
    qcfg = _question_config(cfg)
    for attempt in range(MAX_REDRAWS):
        latent = sample_latents(jax.random.fold_in(key, attempt), qcfg, 1)
        clean = _problems(build(latent, qcfg), f"pair {index} clean question")[0]
        if cfg.kind == "query":
            return clean, _problems(build(pair_edits.switch_query(latent), qcfg), f"pair {index} cf question")[0], None
        if cfg.kind == "rule_order":
            return clean, _problems(build(pair_edits.swap_chain_order(latent, qcfg), qcfg), f"pair {index} cf question")[0], None
        for source in range(3):
            cf = _problems(build(pair_edits.flip_fact(latent, source), qcfg), f"pair {index} cf question")[0]
            if cf.first != clean.first:
                return clean, cf, source
    raise PromptError(f"pair {index}: no fact flip changed the first answer token in {MAX_REDRAWS} draws (question config {qcfg})")


def _foil(problem: Problem) -> str:
    """The first token of the same question with the other chain queried."""
    s = oracle.structure(problem.context)
    other = s.linear[-1] if s.query_logop else s.conclusion
    switched = list(problem.context)
    switched[fmt.query_pos(DEPTH)] = other
    return fmt.TOKEN_NAMES[oracle.prove(switched)[0]]


def check_pair(pair: PromptPair) -> PromptPair:
    """Raise ``PromptError`` unless the pair follows its kind's protocol (problem-level checks)."""
    where = f"pair {pair.index} ({pair.kind})"
    if pair.clean.context == pair.cf.context:
        raise PromptError(f"{where}: the clean and counterfactual questions are identical")
    if len(pair.clean.context) != len(pair.cf.context):
        raise PromptError(f"{where}: questions of different lengths")
    if pair.kind in ("query", "fact") and pair.clean.first == pair.cf.first:
        raise PromptError(f"{where}: both questions start their proof with {pair.clean.first_letter}; the pair cannot flip the answer")
    if pair.kind == "query" and pair.clean.query_letter == pair.cf.query_letter:
        raise PromptError(f"{where}: the query letter did not switch")
    if pair.kind == "rule_order" and pair.clean.first != pair.cf.first:
        raise PromptError(f"{where}: swapping the rules changed the first answer token")
    if pair.clean_target == pair.cf_target:
        raise PromptError(f"{where}: clean and counterfactual targets are both {pair.clean_target!r}: the logit difference is degenerate")
    return pair


def build_pair(seed: int, index: int, cfg: PromptConfig) -> PromptPair:
    """Pair ``index`` of ``seed``: a function of (seed, index, cfg) alone."""
    key = jax.random.fold_in(jax.random.key(seed), index)
    example_key, question_key = jax.random.split(key)
    examples = _examples(example_key, cfg)
    clean, cf, source = _question_pair(question_key, cfg, index)
    if cfg.kind == "rule_order":
        targets = (clean.first_letter, _foil(clean))
    else:
        targets = (clean.first_letter, cf.first_letter)
    return check_pair(PromptPair(index, cfg.kind, examples, clean, cf, *targets, fact_source=source))


def build_pairs(seed: int, n: int, cfg: PromptConfig = PromptConfig()) -> list[PromptPair]:
    """``n`` checked pairs of ``cfg.kind``; pair ``i`` depends on (seed, i, cfg) only."""
    if n < 1:
        raise PromptError(f"need at least one pair, got n={n}")
    return [build_pair(seed, i, cfg) for i in range(n)]
