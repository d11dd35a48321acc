"""Greedy decoding of whole proofs and the evaluation of item 3, per member (seed).

Decoding is compiled and fixed-shape: the answer region is cleared to PAD, then a
``lax.while_loop`` over positions from the end of the context writes the argmax token at
each position until every row has written EOS (or the sequence is full). A full forward
per position, no KV cache: answers are at most ~30 tokens and the model is small.

Scoring is on the host, in numpy: exact match of the whole answer up to and including EOS,
first-answer-token accuracy, exact match per case (``format.CASE_NAMES``), and the oracle's
class of every wrong answer.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.models import gpt
from logic_jax.problem import format as fmt
from logic_jax.problem import oracle
from logic_jax.problem.config import ProblemConfig
from logic_jax.problem.sampler import sample


def make_decode(model_cfg: gpt.GPTConfig, context_len: int):
    """``decode(params, tokens [B, L]) -> tokens [B, L]``: context kept, answer generated."""
    forward = gpt.make_forward(model_cfg)

    def decode(params, tokens):
        length = tokens.shape[1]
        positions = jnp.arange(length)
        tokens = jnp.where(positions[None] < context_len, tokens, fmt.PAD)
        done = jnp.zeros(tokens.shape[0], bool)

        def cond(carry):
            pos, _, done = carry
            return (pos < length - 1) & ~jnp.all(done)

        def body(carry):
            pos, toks, done = carry
            # Logits from the ANSWER token on only (decoding reads no earlier ones).
            logits, _ = forward(params, toks, logits_from=context_len - 1)
            at = jax.lax.dynamic_index_in_dim(logits, pos - (context_len - 1), axis=1, keepdims=False)
            nxt = jnp.argmax(at, axis=-1).astype(toks.dtype)
            column = jax.lax.dynamic_index_in_dim(toks, pos + 1, axis=1, keepdims=False)
            nxt = jnp.where(done, column, nxt)  # rows past EOS keep PAD
            toks = jax.lax.dynamic_update_index_in_dim(toks, nxt, pos + 1, axis=1)
            return pos + 1, toks, done | (nxt == fmt.EOS)

        _, tokens, _ = jax.lax.while_loop(cond, body, (jnp.int32(context_len - 1), tokens, done))
        return tokens

    return decode


@dataclasses.dataclass
class Problems:
    """Held-out problems as host arrays: full target tokens and what is scored."""

    tokens: np.ndarray  # int32 [B, L]: context, answer with EOS, PAD
    first_answer: np.ndarray  # int32 [B]
    case: np.ndarray  # int32 [B]
    context_len: int

    def __len__(self):
        return len(self.tokens)


# Held-out problems are sampled in one call and kept on the host: 10M depth-3 problems are
# 2.7 GB of tokens (far more overflows XLA's 32-bit indexing, and decoding them takes hours).
MAX_PROBLEMS = 10_000_000


def fresh_problems(key: jax.Array, problem_cfg: ProblemConfig, n: int) -> Problems:
    if not 1 <= n <= MAX_PROBLEMS:
        raise ValueError(f"{n} held-out problems: must be 1 to {MAX_PROBLEMS:,}")
    batch = jax.device_get(sample(key, problem_cfg, n))
    return Problems(np.asarray(batch.tokens), np.asarray(batch.first_answer), np.asarray(batch.case), problem_cfg.context_len)


class ProblemsFileError(ValueError):
    """A problems file that cannot be evaluated; the message names the file and line."""


def _ids(values) -> list[int]:
    """Token ids from a JSON list: integers (or integral floats such as 5.0), nothing else."""
    ids = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v:
            raise ValueError(f"{v!r} is not an integer token id")
        ids.append(int(v))
    return ids


def problems_from_records(records: Sequence[dict], depth: int, where: str = "problems") -> Problems:
    """Problems from ``{"context": [...], "answer": [...]}`` records (answers end with EOS)."""
    context_len, length = fmt.context_len(depth), fmt.seq_len(depth)
    rows, first, case = [], [], []
    for i, rec in enumerate(records, 1):
        try:
            context, answer = _ids(rec["context"]), _ids(rec["answer"])
        except (KeyError, TypeError, ValueError) as e:
            raise ProblemsFileError(f"{where}, record {i}: needs 'context' and 'answer' as lists of token ids ({e!r})") from None
        if len(context) != context_len:
            raise ProblemsFileError(f"{where}, record {i}: context has {len(context)} tokens; the model's depth {depth} needs {context_len}")
        if not answer or answer[-1] != fmt.EOS or len(context) + len(answer) > length:
            raise ProblemsFileError(f"{where}, record {i}: the answer must end with EOS ({fmt.EOS}) and fit in {length - context_len} tokens")
        try:
            case.append(oracle.case_of(context))
        except fmt.ParseError as e:
            raise ProblemsFileError(f"{where}, record {i}: not a well-formed context: {e}") from None
        # The answer is the target of exact match; errors are named against the oracle's proof.
        if not oracle.validate(context, answer):
            raise ProblemsFileError(f"{where}, record {i}: the answer is not the minimal proof of its context "
                                    f"(the oracle's: {oracle.prove(context)}, the file's: {answer})")
        rows.append(context + answer + [fmt.PAD] * (length - len(context) - len(answer)))
        first.append(answer[0])
    if not rows:
        raise ProblemsFileError(f"{where}: no problems")
    return Problems(np.asarray(rows, np.int32), np.asarray(first, np.int32), np.asarray(case, np.int32), context_len)


def score(predicted: np.ndarray, problems: Problems, classify: bool = True) -> dict:
    """Metrics of one member's decoded tokens [B, L] against the targets."""
    c = problems.context_len
    pred, target = predicted[:, c:], problems.tokens[:, c:]
    exact = np.all(pred == target, axis=1)
    first = pred[:, 0] == problems.first_answer
    per_case, case_count = {}, {}
    for i, name in enumerate(fmt.CASE_NAMES):
        rows = problems.case == i
        case_count[name] = int(rows.sum())
        per_case[name] = float(exact[rows].mean()) if rows.any() else None
    out = dict(exact=float(exact.mean()), first_token=float(first.mean()), per_case=per_case, case_count=case_count, n=len(problems))
    if classify:
        errors = collections.Counter()
        for b in np.flatnonzero(~exact):
            errors[oracle.classify(problems.tokens[b, :c], predicted[b, c:])] += 1
        out["errors"] = dict(sorted(errors.items()))
    return out


@functools.lru_cache(maxsize=16)
def make_evaluate(model_cfg: gpt.GPTConfig, context_len: int, mesh=None, batch: int = 1024):
    """``evaluate(stacked_params, problems, classify=True) -> [metrics per member]``.

    Members are decoded together (vmap); with a mesh, the member axis is sharded over it.
    Problems go through in slices of ``batch`` to bound memory.
    """
    decode = jax.vmap(make_decode(model_cfg, context_len), in_axes=(0, None))
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec as P

        seeds, replicated = NamedSharding(mesh, P("seeds")), NamedSharding(mesh, P())
        decode = jax.jit(decode, in_shardings=(seeds, replicated), out_shardings=replicated)
    else:
        decode = jax.jit(decode)

    def evaluate(params, problems: Problems, classify: bool = True) -> list[dict]:
        outs = []
        for start in range(0, len(problems), batch):
            part = problems.tokens[start : start + batch]
            if len(part) < batch and len(problems) > batch:  # one compiled shape: pad the last slice
                part = np.concatenate([part, np.repeat(part[-1:], batch - len(part), 0)])
            outs.append(np.asarray(jax.device_get(decode(params, part)))[:, : min(batch, len(problems) - start)])
        predicted = np.concatenate(outs, axis=1)
        return [score(p, problems, classify) for p in predicted]

    return evaluate


def summary_line(metrics: Sequence[dict]) -> str:
    exact = [m["exact"] for m in metrics]
    return f"exact match mean {np.mean(exact):.4f} min {np.min(exact):.4f} (per seed {[round(e, 4) for e in exact]})"


def steps_to_perfect(evals: list, members: Sequence[int]) -> int | None:
    """First evaluated step at which every one of ``members`` is at 100% exact match."""
    for step, metrics in evals:
        if all(metrics[i]["exact"] >= 1.0 for i in members):
            return step
    return None
