"""Checked, tokenized pairs as fixed-shape device batches.

Every prompt is left-padded to the longest prompt of the run (one shape, one compilation per
stage), so the last P positions are real tokens in every row. The last batch is filled up
with copies of its first pair at ``weight`` 0: every reduction over pairs is a weighted sum.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from logic_jax.llm.prompts import PromptPair
from logic_jax.llm.tokens import SPANS, TokenizedPair

Array = Any


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PairBatch:
    clean: Array  # int32 [B, L]
    cf: Array  # int32 [B, L]
    mask: Array  # int32 [B, L]: 1 token, 0 left padding (the same for both prompts of a pair)
    clean_target: Array  # int32 [B]: the LD's plus token
    cf_target: Array  # int32 [B]: the LD's minus token
    clean_first: Array  # int32 [B]: the clean prompt's correct first answer token
    cf_first: Array  # int32 [B]: the counterfactual prompt's correct first answer token
    query_index: Array  # int32 [B]: QUERY's index in the padded prompt
    spans: Array  # bool [B, n_spans, L]: ``tokens.SPANS`` of the clean prompt
    weight: Array  # float32 [B]: 1 for a pair, 0 for filler

    @property
    def size(self) -> int:
        return self.clean.shape[0]

    @property
    def length(self) -> int:
        return self.clean.shape[1]


def make_batches(pairs: Sequence[PromptPair], tokenized: Sequence[TokenizedPair], batch_size: int) -> list[PairBatch]:
    """Host numpy batches of ``batch_size`` rows (the last one filled at weight 0)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    length = max(tp.length for tp in tokenized)
    rows = []
    for pair, tp in zip(pairs, tokenized):
        pad = length - tp.length
        spans = np.zeros((len(SPANS), length), bool)
        for s, name in enumerate(SPANS):
            spans[s, [pad + i for i in tp.spans[name]]] = True
        # For rule_order both prompts' correct first token is the clean one; cf_target is the foil.
        cf_first = tp.clean_target if pair.kind == "rule_order" else tp.cf_target
        rows.append(dict(
            clean=np.pad(tp.clean_ids, (pad, 0)),
            cf=np.pad(tp.cf_ids, (pad, 0)),
            mask=np.pad(np.ones(tp.length, np.int32), (pad, 0)),
            clean_target=tp.clean_target,
            cf_target=tp.cf_target,
            clean_first=tp.clean_target,
            cf_first=cf_first,
            query_index=pad + tp.query_index,
            spans=spans,
            weight=1.0,
        ))
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        chunk = chunk + [dict(chunk[0], weight=0.0)] * (batch_size - len(chunk))
        batches.append(PairBatch(
            clean=np.stack([r["clean"] for r in chunk]).astype(np.int32),
            cf=np.stack([r["cf"] for r in chunk]).astype(np.int32),
            mask=np.stack([r["mask"] for r in chunk]).astype(np.int32),
            clean_target=np.array([r["clean_target"] for r in chunk], np.int32),
            cf_target=np.array([r["cf_target"] for r in chunk], np.int32),
            clean_first=np.array([r["clean_first"] for r in chunk], np.int32),
            cf_first=np.array([r["cf_first"] for r in chunk], np.int32),
            query_index=np.array([r["query_index"] for r in chunk], np.int32),
            spans=np.stack([r["spans"] for r in chunk]),
            weight=np.array([r["weight"] for r in chunk], np.float32),
        ))
    return batches
