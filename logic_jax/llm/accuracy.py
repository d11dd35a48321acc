"""Task accuracy of the model on the prompts: greedy decoding of the proof, exact match and first token.

``greedy`` decodes with a key/value cache (``cached.Prefix`` as a fixed-size buffer that grows
one token per step, all in one compiled ``lax.scan``): the prompt runs once, then each new
token runs alone. It produces the same tokens as ``models.mistral.generate.greedy_decode``
(which reruns the whole buffer per step) and is what makes decoding 6-shot prompts cheap.

Scoring, per prompt (both prompts of every pair are valid problems): ``first_token`` is the
argmax at the last prompt position against the correct first answer token; ``exact`` is the
decoded continuation, up to its first newline, equal to the proof text. Reported overall and
per case of ``format.CASE_NAMES``, for the clean prompts, the counterfactual ones, and both.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.llm.cached import Prefix, kv_sites, make_suffix_forward, prefill, stack_kv
from logic_jax.llm.prompts import PromptPair
from logic_jax.models.mistral.config import MistralConfig
from logic_jax.problem import format as fmt


@functools.partial(jax.jit, static_argnames=("config", "steps"))
def greedy(config: MistralConfig, params, tokens: jax.Array, attention_mask: jax.Array, steps: int) -> jax.Array:
    """``[B, steps]`` greedy continuation of left-padded prompts, with a key/value cache."""
    batch, length = tokens.shape
    last, prefix, _ = prefill(config, params, tokens, attention_mask)
    grow = lambda a: jnp.pad(a, [(0, 0), (0, 0), (0, steps), (0, 0), (0, 0)])  # noqa: E731
    buffer = Prefix(grow(prefix.k), grow(prefix.v), jnp.pad(prefix.key_mask, [(0, 0), (0, steps)]), prefix.start)
    n_tokens = attention_mask.astype(jnp.int32).sum(-1)
    forward = make_suffix_forward(config, True)
    first = jnp.argmax(last, axis=-1).astype(tokens.dtype)

    def step(carry, i):
        buffer, token = carry
        # ``token`` sits at index length + i of the buffer; its own key/value come from the suffix.
        at = dataclasses.replace(buffer, start=jnp.asarray(length, jnp.int32) + i)
        logits, acts = forward(params, token[:, None], None, kv_sites(config.num_layers), prefix=at, positions=(n_tokens + i)[:, None])
        k, v = stack_kv(acts, config.num_layers)
        index = (0, 0, length + i, 0, 0)
        buffer = Prefix(
            jax.lax.dynamic_update_slice(buffer.k, k.astype(buffer.k.dtype), index),
            jax.lax.dynamic_update_slice(buffer.v, v.astype(buffer.v.dtype), index),
            buffer.key_mask.at[:, length + i].set(True),
            buffer.start,
        )
        token = jnp.argmax(logits[:, -1], axis=-1).astype(tokens.dtype)
        return (buffer, token), token

    _, rest = jax.lax.scan(step, (buffer, first), jnp.arange(steps - 1))
    return jnp.concatenate([first[:, None], rest.T], axis=1)


@dataclasses.dataclass
class Tally:
    """Correct counts per (role, case)."""

    counts: dict = dataclasses.field(default_factory=dict)  # (role, case) -> [n, first_ok, exact_ok]

    def add(self, role: str, case: int, first_ok: bool, exact_ok: bool) -> None:
        row = self.counts.setdefault((role, case), [0, 0, 0])
        row[0] += 1
        row[1] += int(first_ok)
        row[2] += int(exact_ok)

    def summary(self) -> dict:
        def block(keys):
            n = sum(self.counts[k][0] for k in keys)
            first = sum(self.counts[k][1] for k in keys)
            exact = sum(self.counts[k][2] for k in keys)
            return {"n": n, "first_token": first / n if n else None, "exact_match": exact / n if n else None}

        out = {}
        for role in ("clean", "counterfactual", "all"):
            keys = [k for k in self.counts if role == "all" or k[0] == role]
            if not keys:
                continue
            cases = sorted({k[1] for k in keys})
            out[role] = {**block(keys), "per_case": {fmt.CASE_NAMES[c]: block([k for k in keys if k[1] == c]) for c in cases}}
        return out


def continuation(decode, ids: Sequence[int]) -> str:
    """The decoded continuation up to its first newline, without surrounding spaces."""
    return decode(list(ids)).split("\n", 1)[0].strip()


def score_batch(tally: Tally, decode, pairs: Sequence[PromptPair], role: str, generated: np.ndarray, first_correct: np.ndarray) -> list[str]:
    """Score the real rows of one batch (``len(pairs)`` of them); returns the decoded answers.

    ``generated[:, 0]`` is the argmax at the last prompt position: the first-token prediction.
    """
    answers = []
    for row, pair in enumerate(pairs):
        problem = pair.clean if role == "clean" else pair.cf
        answer = continuation(decode, generated[row])
        first_ok = int(generated[row, 0]) == int(first_correct[row])
        tally.add(role, problem.case, first_ok, answer == problem.proof_text)
        answers.append(answer)
    return answers
