"""Problems as host records: the JSONL/NPZ files of ``launch/sample.py`` and their reader."""

from __future__ import annotations

import json
import os
import zipfile
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


def read_npz(path: str) -> list[dict]:
    """``context`` and ``answer`` records of an npz from ``launch/sample.py --format=npz``.

    Raises ``ValueError`` naming the file and what it lacks.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = sorted({"config", "tokens", "answer_mask"} - set(z.files))
            if missing:
                raise ValueError(f"{path}: not an npz of launch/sample.py (no {', '.join(missing)})")
            context_len = fmt.context_len(int(json.loads(str(z["config"]))["depth"]))
            tokens, mask = z["tokens"], z["answer_mask"].astype(bool)
            if tokens.ndim != 2 or mask.shape != tokens.shape:
                raise ValueError(f"{path}: tokens {tokens.shape} and answer_mask {mask.shape} must be 2-D arrays of one shape")
    except (zipfile.BadZipFile, KeyError, TypeError, json.JSONDecodeError) as e:  # a damaged or foreign zip
        raise ValueError(f"{path}: not a readable npz of launch/sample.py ({e})") from None
    return [{"context": t[:context_len].tolist(), "answer": t[m].tolist()} for t, m in zip(tokens, mask)]


def read_problems(path: str) -> list[dict]:
    """The records of a problem file of ``launch/sample.py``: JSONL, or npz (told by its zip header)."""
    if not os.path.exists(path):
        raise ValueError(f"no such problems file: {path}")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    return read_npz(path) if is_zip else read_jsonl(path)


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
