"""Problems as host records: the JSONL/NPZ files of ``launch/sample.py`` and their reader."""

from __future__ import annotations

import json
import os
from typing import Iterator

import numpy as np

from logic_jax.problem import format as fmt
from logic_jax.problem.sampler import Batch


def batch_arrays(batch: Batch) -> dict[str, np.ndarray]:
    """Every array of a batch (latent choices included), as host numpy arrays."""
    out = {k: np.asarray(v) for k, v in vars(batch).items() if k != "latent"}
    out.update({f"latent_{k}": np.asarray(v) for k, v in vars(batch.latent).items()})
    return out


def iter_records(batch: Batch, context_len: int) -> Iterator[dict]:
    """One dict a problem: ``context`` and ``answer`` (ids, the answer ending with EOS), ``text``, metadata."""
    arrays = batch_arrays(batch)
    tokens, mask = arrays["tokens"], arrays["answer_mask"]
    for i in range(tokens.shape[0]):
        context = tokens[i, :context_len].tolist()
        answer = tokens[i][mask[i]].tolist()
        case = int(arrays["case"][i])
        yield {
            "context": context,
            "answer": answer,
            "text": fmt.render(context, answer),
            "case": case,
            "case_name": fmt.CASE_NAMES[case],
            "query_logop": bool(arrays["latent_query_logop"][i]),
            "is_and": bool(arrays["latent_is_and"][i]),
            "truth_first_second_linear": arrays["latent_truth"][i].tolist(),
            "operands_swapped": bool(arrays["latent_operands_swapped"][i]),
            "logop_chain_first": bool(arrays["logop_chain_first"][i]),
            "first_answer": int(arrays["first_answer"][i]),
            "query_pos": int(arrays["query_pos"][i]),
            "answer_pos": int(arrays["answer_pos"][i]),
            "rule_pos": arrays["rule_pos"][i].tolist(),
            "fact_pos": arrays["fact_pos"][i].tolist(),
            "letters": arrays["latent_letters"][i].tolist(),
        }


def read_jsonl(path: str) -> list[dict]:
    """The records of a JSONL problem file (one JSON object a line; blank lines skipped).

    Raises ``ValueError`` naming the file, and the line of one that is not JSON. Which fields a
    reader needs is its own check (evaluation reads ``context`` and ``answer``).
    """
    if not os.path.exists(path):
        raise ValueError(f"no such problems file: {path}")
    records = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {line_no}: not JSON ({e})") from None
    return records
