"""The attention of one seed on one problem, for ``launch/inspect.py --attention``.

``attention_example`` restores the checkpoint, takes a given token sequence (a context, or a
context and its proof) or samples a problem, and returns every layer's attention on it;
``draw_example`` also draws it with ``figures.draw_attention``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from logic_jax.analysis import attention, common, figures
from logic_jax.models.inputs import check_tokens
from logic_jax.problem import format as fmt
from logic_jax.problem.sampler import sample


def attention_example(workdir: str, seed: int = 0, tokens: Sequence[int] | None = None, query: str | None = None,
                      with_answer: bool = False, key: int = 0, step: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(pattern [layers, heads, n, n], tokens [n], title)`` of seed index ``seed``.

    ``tokens``: a context (through ANSWER), optionally followed by answer tokens; None samples a
    problem of the run's distribution (``query`` "linear"/"logop" fixes the queried chain;
    ``with_answer`` appends its proof, teacher-forced, up to EOS).
    """
    from logic_jax.train import config as config_lib
    from logic_jax.train import inspection

    step, state, run, _ = inspection.load(workdir, step)
    model_cfg, problem_cfg = config_lib.model_config(run["config"]), config_lib.problem_config(run["config"])
    params = common.seed_params(common.host(state.params), seed)
    if tokens is None:
        cfg = common.pin(problem_cfg, query=query)
        batch = jax.device_get(sample(jax.random.PRNGKey(key), cfg, 1))
        n = problem_cfg.context_len + (int(batch.answer_len[0]) if with_answer else 0)
        tokens = np.asarray(batch.tokens[0, :n])
        source = f"sampled problem (key {key})"
    else:
        tokens = np.asarray(tokens)  # not int32 yet: an id past int32 must be named, not overflow
        if tokens.ndim != 1 or not 0 < len(tokens) <= model_cfg.max_len:
            raise common.AnalysisError(f"tokens must be one sequence of 1..{model_cfg.max_len} ids, got shape {tokens.shape}")
        try:  # here, where the ids are concrete: the compiled forward below cannot see them
            check_tokens(tokens[None], fmt.VOCAB_SIZE)
        except ValueError as e:
            raise common.AnalysisError(str(e)) from None
        tokens = tokens.astype(np.int32)
        source = "given problem"
    pattern = attention.patterns(common.forward_for(model_cfg), params, tokens[None], model_cfg.n_layers)[0]
    title = f"{workdir}, step {step}, seed {seed}: {source}\n{fmt.render(tokens)}"
    return pattern, tokens, title


def draw_example(workdir: str, path: str, seed: int = 0, **kwargs) -> str:
    """Draw ``attention_example(workdir, seed, **kwargs)`` to ``path`` (a PNG); returns the path."""
    pattern, tokens, title = attention_example(workdir, seed, **kwargs)
    return figures.draw_attention(pattern, tokens, path, title)
