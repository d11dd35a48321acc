"""Circuit verification: keep a set of heads clean at their positions, patch every other head.

Every layer's ``hook_z`` at the last P positions is replaced by the counterfactual run's
value, except the circuit's heads at their positions (paper.md: locators at QUERY, movers at
QUERY and the last position, fact and decision heads at the last position). What is reported,
for the whole circuit, for the circuit without each family (necessity), and for nothing kept
(every head patched), as means over pairs:

    of_clean   = LD_kept / LD_clean                        (the paper's "restores 90% of the clean LD")
    normalized = (LD_kept - LD_cf) / (LD_clean - LD_cf)    (0 at LD_cf, 1 at LD_clean)

Nothing kept must give LD_cf (normalized 0) for every pair kind: the logits read only the last
position's residual stream, which is then entirely counterfactual (its MLPs read only it), so
that row checks that the patch covers every path. Positions before the last P keep their
clean values (the clean run's cached keys and values). For query pairs, whose prompts differ only
at QUERY, that is the paper's protocol (every position patched); for the other kinds it is not
(``protocol_note``).

A circuit is data (``Circuit``), from JSON::

    {"locator": {"heads": [[12, 9]], "positions": ["query"]}, "mover": {...}, ...}

and is checked against the model: a head outside it is a ``CircuitError`` naming it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.interp.hooks import Patch, block_site
from logic_jax.interp.metrics import effect_defined
from logic_jax.llm.batches import PairBatch
from logic_jax.llm.cached import make_suffix_forward
from logic_jax.llm.sweeps import Prepared, WeightedLD
from logic_jax.models.mistral.config import MistralConfig

POSITIONS = ("query", "last")

# paper.md, Part 2: the circuit found in Mistral-7B, (layer, head), 0-indexed.
MISTRAL_7B = {
    "locator": {"heads": [[12, 9]], "positions": ["query"]},
    "mover": {"heads": [[13, 11]], "positions": ["query", "last"]},
    "fact": {"heads": [[16, 12], [16, 14]], "positions": ["last"]},
    "decision": {"heads": [[19, 8]], "positions": ["last"]},
}


class CircuitError(ValueError):
    """A circuit spec that is malformed or names a head the model does not have."""


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    heads: tuple[tuple[int, int], ...]
    positions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Circuit:
    families: tuple[Family, ...]

    @property
    def heads(self) -> tuple[tuple[int, int], ...]:
        return tuple(dict.fromkeys(h for f in self.families for h in f.heads))

    def to_json(self) -> dict:
        return {f.name: {"heads": [list(h) for h in f.heads], "positions": list(f.positions)} for f in self.families}

    def variants(self) -> tuple[str, ...]:
        """Names of the kept sets: the circuit, nothing, the circuit without each family."""
        return ("circuit", "none") + tuple(f"without_{f.name}" for f in self.families)

    def validate(self, config: MistralConfig) -> "Circuit":
        for family in self.families:
            check_heads(family.heads, config, f"circuit family {family.name!r}")
        return self


def check_heads(heads, config: MistralConfig, what: str) -> None:
    """Raise ``CircuitError`` naming the first (layer, head) outside the model."""
    for layer, head in heads:
        if not (0 <= layer < config.num_layers and 0 <= head < config.num_heads):
            raise CircuitError(f"{what}: head ({layer}, {head}) is outside the model ({config.num_layers} layers x {config.num_heads} heads)")


def parse_circuit(spec: Mapping[str, Any] | str | Path | None) -> Circuit:
    """A ``Circuit`` from a dict, a JSON string, a JSON file path, or None (paper.md's Mistral circuit)."""
    if spec is None:
        spec = MISTRAL_7B
    elif isinstance(spec, (str, Path)):
        text = str(spec)
        try:
            spec = json.loads(Path(text).read_text() if not text.lstrip().startswith("{") else text)
        except (OSError, json.JSONDecodeError) as err:
            raise CircuitError(f"circuit {text[:80]!r}: not a JSON object or a readable JSON file ({err})") from err
    if not isinstance(spec, Mapping) or not spec:
        raise CircuitError(f"circuit must be a non-empty JSON object of families, got {spec!r}")
    families = []
    for name, family in spec.items():
        if not isinstance(family, Mapping) or set(family) != {"heads", "positions"}:
            raise CircuitError(f"circuit family {name!r}: expected {{'heads': [[layer, head], ...], 'positions': [...]}}, got {family!r}")
        heads = family["heads"]
        if not heads or not all(isinstance(h, (list, tuple)) and len(h) == 2 and all(isinstance(x, int) for x in h) for h in heads):
            raise CircuitError(f"circuit family {name!r}: heads must be a non-empty list of [layer, head] int pairs, got {heads!r}")
        positions = tuple(family["positions"])
        if not positions or any(p not in POSITIONS for p in positions):
            raise CircuitError(f"circuit family {name!r}: positions must be a non-empty subset of {POSITIONS}, got {list(positions)}")
        families.append(Family(str(name), tuple((int(l), int(h)) for l, h in heads), positions))
    return Circuit(tuple(families))


def keep_masks(circuit: Circuit, config: MistralConfig, batch: PairBatch, positions: int) -> np.ndarray:
    """bool ``[variants, layers, B, P, heads]``: where each variant keeps the clean ``hook_z``."""
    size, length = batch.clean.shape
    offset = np.asarray(batch.query_index) - (length - positions)  # QUERY's index among the last P
    if (offset < 0).any():
        raise CircuitError(f"QUERY lies before the last {positions} positions; the circuit needs it among the patched positions")
    rows = {
        "query": np.eye(positions, dtype=bool)[offset],  # [B, P]
        "last": np.broadcast_to(np.eye(positions, dtype=bool)[positions - 1], (size, positions)),
    }

    def mask_of(families) -> np.ndarray:
        keep = np.zeros((config.num_layers, size, positions, config.num_heads), bool)
        for family in families:
            at = np.any([rows[p] for p in family.positions], axis=0)
            for layer, head in family.heads:
                keep[layer, :, :, head] |= at
        return keep

    masks = [mask_of(circuit.families), mask_of(())]
    masks += [mask_of([f for f in circuit.families if f is not dropped]) for dropped in circuit.families]
    return np.stack(masks)


@functools.partial(jax.jit, static_argnames=("config",))
def _variant_lds(config: MistralConfig, params, prepared: Prepared, metric: WeightedLD, keep: jax.Array) -> jax.Array:
    forward = make_suffix_forward(config, True)
    sites = [block_site(l, "hook_z") for l in range(config.num_layers)]

    def one(keep_v):
        patches = {s: Patch(value=prepared.cf_values[s], mask=~keep_v[l][..., None]) for l, s in enumerate(sites)}
        logits, _ = forward(params, prepared.suffix, patches, (), **prepared.forward_kwargs)
        return metric(logits)

    return jax.lax.map(one, keep)  # a handful of variants: one at a time bounds memory


def circuit_lds(circuit: Circuit, config: MistralConfig, params, prepared: Prepared, metric: WeightedLD, batch: PairBatch, positions: int) -> np.ndarray:
    """Weighted LD sums ``[variants]`` (order of ``circuit.variants()``) for one batch."""
    keep = keep_masks(circuit, config, batch, positions)
    return np.asarray(jax.device_get(_variant_lds(config, params, prepared, metric, jnp.asarray(keep))), np.float64)


def scores(circuit: Circuit, sums: np.ndarray, count: float, mean_clean: float, mean_cf: float) -> dict:
    """``{variant: {"ld", "of_clean", "normalized"}}`` from the summed LDs (module docstring);
    ``of_clean`` is None where LD_clean = 0, ``normalized`` where LD_clean = LD_cf."""
    lds = dict(zip(circuit.variants(), np.asarray(sums) / count))
    share, normalized = effect_defined(mean_clean, 0.0), effect_defined(mean_clean, mean_cf)
    return {
        name: {
            "ld": float(ld),
            "of_clean": float(ld / mean_clean) if share else None,
            "normalized": float((ld - mean_cf) / (mean_clean - mean_cf)) if normalized else None,
        }
        for name, ld in lds.items()
    }


def protocol_note(pair_kind: str) -> str | None:
    """Why circuit verification on this pair kind is not the paper's protocol; None for query pairs."""
    if pair_kind == "query":  # the prompts differ only at QUERY, inside the patched positions
        return None
    return (
        f"{pair_kind} pairs differ before the last P positions, where every head keeps its clean value, so the kept heads "
        "still read the clean context there: this is not the paper's protocol (query pairs, every position patched)"
    )
