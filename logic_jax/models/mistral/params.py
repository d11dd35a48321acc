"""Hugging Face Mistral weight names -> our param paths: one declarative table.

Each row: a regex over the HF tensor name, the path in our params tree (``{0}`` is the
regex's layer group), and how the tensor is transformed. Hugging Face stores ``nn.Linear``
weights as ``[out, in]``; ours are ``[in..., out...]`` (see ``modeling.py``), so a ``Linear``
row transposes to ``[in, out]`` and reshapes to our shape, splitting heads. ``in_axes`` says
how many leading axes of our shape form the input (2 for ``o_proj``: ``[heads, d_head]``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class Copy:
    """Same shape and layout in both (embeddings, norm scales)."""

    def hf_shape(self, our_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(our_shape)

    def to_ours(self, tensor, our_shape: tuple[int, ...]):
        return tensor

    def to_hf(self, tensor: np.ndarray) -> np.ndarray:
        return tensor


@dataclasses.dataclass(frozen=True)
class Linear:
    """HF ``[out, in]`` matrix -> ours: transpose, then split axes to ``our_shape``."""

    in_axes: int = 1

    def hf_shape(self, our_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(our_shape[self.in_axes :]), math.prod(our_shape[: self.in_axes]))

    def to_ours(self, tensor, our_shape: tuple[int, ...]):
        return tensor.T.reshape(our_shape)  # numpy or jax (the loader runs it on device)

    def to_hf(self, tensor: np.ndarray) -> np.ndarray:
        """Inverse of ``to_ours`` (used to write checkpoints from our params)."""
        flat_in = math.prod(tensor.shape[: self.in_axes])
        return tensor.reshape(flat_in, -1).T


@dataclasses.dataclass(frozen=True)
class Rule:
    hf_pattern: str
    our_path: tuple[str, ...]
    transform: Copy | Linear


LAYER = r"model\.layers\.(\d+)\."

# The whole mapping. Nothing else in the package knows HF names.
WEIGHT_TABLE: tuple[Rule, ...] = (
    Rule(r"model\.embed_tokens\.weight", ("embed",), Copy()),
    Rule(LAYER + r"input_layernorm\.weight", ("layers", "{0}", "input_norm", "scale"), Copy()),
    Rule(LAYER + r"self_attn\.q_proj\.weight", ("layers", "{0}", "attn", "q_proj"), Linear(in_axes=1)),
    Rule(LAYER + r"self_attn\.k_proj\.weight", ("layers", "{0}", "attn", "k_proj"), Linear(in_axes=1)),
    Rule(LAYER + r"self_attn\.v_proj\.weight", ("layers", "{0}", "attn", "v_proj"), Linear(in_axes=1)),
    Rule(LAYER + r"self_attn\.o_proj\.weight", ("layers", "{0}", "attn", "o_proj"), Linear(in_axes=2)),
    Rule(LAYER + r"post_attention_layernorm\.weight", ("layers", "{0}", "post_attn_norm", "scale"), Copy()),
    Rule(LAYER + r"mlp\.gate_proj\.weight", ("layers", "{0}", "mlp", "gate_proj"), Linear(in_axes=1)),
    Rule(LAYER + r"mlp\.up_proj\.weight", ("layers", "{0}", "mlp", "up_proj"), Linear(in_axes=1)),
    Rule(LAYER + r"mlp\.down_proj\.weight", ("layers", "{0}", "mlp", "down_proj"), Linear(in_axes=1)),
    Rule(r"model\.norm\.weight", ("final_norm", "scale"), Copy()),
    Rule(r"lm_head\.weight", ("lm_head",), Linear(in_axes=1)),
)

_COMPILED = tuple((re.compile(rule.hf_pattern + r"\Z"), rule) for rule in WEIGHT_TABLE)

ParamPath = tuple  # keys into the pure-dict params tree (layer indices are ints)


def match(hf_name: str) -> tuple[ParamPath, Copy | Linear] | None:
    """Our path and transform for one HF tensor name, or None if the table has no row for it."""
    for pattern, rule in _COMPILED:
        found = pattern.match(hf_name)
        if found:
            path = tuple(int(part.format(*found.groups())) if part == "{0}" else part for part in rule.our_path)
            return path, rule.transform
    return None


def hf_name_for(rule: Rule, layer: int | None) -> str:
    """The concrete HF name a row stands for (``layer`` fills the layer group)."""
    name = rule.hf_pattern.replace(LAYER, f"model.layers.{layer}.") if layer is not None else rule.hf_pattern
    return name.replace("\\.", ".")


def expected_hf_names(num_layers: int) -> Iterator[tuple[str, ParamPath, Copy | Linear]]:
    """Every tensor a checkpoint of ``num_layers`` layers must hold, with its destination."""
    for rule in WEIGHT_TABLE:
        layers = range(num_layers) if rule.hf_pattern.startswith(LAYER) else [None]
        for layer in layers:
            name = hf_name_for(rule, layer)
            path, transform = match(name)
            yield name, path, transform


def get_path(tree, path: ParamPath):
    for key in path:
        tree = tree[key]
    return tree


def set_path(tree, path: ParamPath, value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value
