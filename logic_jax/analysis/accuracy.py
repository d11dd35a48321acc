"""Claim 1: exact match of the whole greedy-decoded proof on held-out problems, per case.

Decoding and scoring are the trainer's (``train.evaluate``): every seed of the stacked
parameters is decoded together under ``vmap``.
"""

from __future__ import annotations

import jax
import numpy as np

from logic_jax.models import gpt
from logic_jax.problem import format as fmt
from logic_jax.problem.config import ProblemConfig
from logic_jax.train import evaluate as evaluate_lib


def held_out(key: jax.Array, problem_cfg: ProblemConfig, n: int) -> evaluate_lib.Problems:
    """``n`` fresh problems (the analysis key is apart from every training stream)."""
    return evaluate_lib.fresh_problems(key, problem_cfg, n)


def run(model_cfg: gpt.GPTConfig, stacked_params, problems: evaluate_lib.Problems, seeds: list[int], batch: int = 1024) -> list[dict]:
    """One metrics dict per seed index in ``seeds``: ``exact``, ``first_token``, ``per_case``, ``case_count``, ``errors``."""
    params = jax.tree.map(lambda x: np.asarray(x)[np.asarray(seeds)], stacked_params)  # on the host: no compilation per leaf
    evaluate = evaluate_lib.make_evaluate(model_cfg, problems.context_len, None, batch=min(batch, len(problems)))
    return evaluate(params, problems)


def per_query(metrics: dict) -> dict:
    """Exact match over linear queries and over LogOp queries (case-count weighted)."""
    out = {}
    for name, cases in (("linear", fmt.CASE_NAMES[:1]), ("LogOp", fmt.CASE_NAMES[1:])):
        counts = [metrics["case_count"][c] for c in cases if metrics["per_case"][c] is not None]
        values = [metrics["per_case"][c] for c in cases if metrics["per_case"][c] is not None]
        out[name] = float(np.average(values, weights=counts)) if counts and sum(counts) else None
    return out
