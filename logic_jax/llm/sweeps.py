"""The patching sweeps of paper.md on a batch of prompt pairs, each ONE compiled, vmapped call.

Per batch, ``prepare`` runs (in one compiled call) the clean and the counterfactual prompts:
the keys/values of all but the last P tokens (the ``Prefix``), then the last P tokens, caching
the counterfactual activations of every swept site there. Each sweep is then
``interp.patching.patching_sweep`` over the suffix forward (``cached.py``): the clean suffix
with one cell's activations replaced by the counterfactual ones, at ALL of the last P
positions at once (the paper's protocol), every cell in one vmapped call (``chunk_size`` cells
at a time):

==========  =======================  ======================  ===========================
name        site                     result                  unit patched
==========  =======================  ======================  ===========================
head_z      attn.hook_z              [layers, heads]         one query head's output
head_q      attn.hook_q              [layers, heads]         one query head's query
head_k      attn.hook_k              [layers, kv_heads]      one key/value head's key
head_v      attn.hook_v              [layers, kv_heads]      one key/value head's value
resid       hook_resid_pre           [layers, P]             the residual stream at one of the last P positions
attn_out    hook_attn_out            [layers]                the attention block's output (last P positions)
mlp_out     hook_mlp_out             [layers]                the MLP block's output (last P positions)
==========  =======================  ======================  ===========================

The metric (paper.md): LD = logit(clean target) - logit(counterfactual target) at the last
position, summed over pairs with the batch weights (``WeightedLD``); ``Totals`` accumulates
the sums over batches, and ``effects`` turns them into
``(mean LD_patched - mean LD_clean) / (mean LD_cf - mean LD_clean)`` (0 no effect, 1 a full
flip). For the ``rule_order`` kind that denominator is ~0 by construction (both prompts have
the same answer), so its effects are the raw change ``mean LD_patched - mean LD_clean`` in
logits (``effect_kind`` says which).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.interp.attribution import attribution_sweep
from logic_jax.interp.hooks import block_site
from logic_jax.interp.metrics import effect_defined, logit_diff, normalized_effect
from logic_jax.interp.patching import patching_sweep
from logic_jax.llm.batches import PairBatch
from logic_jax.llm.cached import Prefix, make_suffix_forward, prefill
from logic_jax.models.mistral.config import MistralConfig
from logic_jax.models.mistral.modeling import positions_from_mask

Array = Any

SWEEPS = {
    "head_z": ("hook_z", ("layer", "head")),
    "head_q": ("hook_q", ("layer", "head")),
    "head_k": ("hook_k", ("layer", "head")),
    "head_v": ("hook_v", ("layer", "head")),
    "resid": ("hook_resid_pre", ("layer", "pos")),
    "attn_out": ("hook_attn_out", ("layer",)),
    "mlp_out": ("hook_mlp_out", ("layer",)),
}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class WeightedLD:
    """``sum_b weight[b] * LD[b]`` at the last position of the logits (a pytree: data, not code)."""

    tok_a: Array  # int32 [B]
    tok_b: Array  # int32 [B]
    weight: Array  # float32 [B]

    def per_pair(self, logits: Array) -> Array:
        return logit_diff(logits, logits.shape[1] - 1, self.tok_a, self.tok_b)

    def __call__(self, logits: Array) -> Array:
        return jnp.sum(self.weight * self.per_pair(logits))


def metric_of(batch: PairBatch) -> WeightedLD:
    return WeightedLD(jnp.asarray(batch.clean_target), jnp.asarray(batch.cf_target), jnp.asarray(batch.weight))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Prepared:
    """What every sweep of one batch needs, computed once."""

    prefix: Prefix  # the clean prompts' keys/values before the last P tokens
    suffix: Array  # int32 [B, P]: the clean prompts' last P tokens
    positions: Array  # int32 [B, P]: their rotary positions
    cf_values: dict  # site -> counterfactual activation at the last P positions
    clean_logits: Array  # float32 [B, V]: last position, clean prompts
    cf_logits: Array  # float32 [B, V]: last position, counterfactual prompts
    clean_cache: dict  # site -> clean activation at the last P positions (e.g. hook_pattern)

    @property
    def forward_kwargs(self) -> dict:
        return dict(prefix=self.prefix, positions=self.positions)


def sweep_sites(num_layers: int, names=tuple(SWEEPS)) -> tuple[str, ...]:
    return tuple(block_site(l, SWEEPS[n][0]) for n in names for l in range(num_layers))


def _suffix_run(config, params, tokens, mask, positions: int, cache: tuple[str, ...]):
    """Prefill all but the last ``positions`` tokens, then run those with ``cache``."""
    _, prefix, _ = prefill(config, params, tokens[:, :-positions], mask[:, :-positions])
    pos = positions_from_mask(mask)[:, -positions:]
    forward = make_suffix_forward(config, True)
    logits, acts = forward(params, tokens[:, -positions:], None, cache, prefix=prefix, positions=pos)
    return logits[:, -1], prefix, pos, acts


@functools.partial(jax.jit, static_argnames=("config", "positions", "cf_sites", "clean_sites"))
def prepare(config: MistralConfig, params, batch: PairBatch, *, positions: int, cf_sites: tuple[str, ...], clean_sites: tuple[str, ...] = ()) -> Prepared:
    """Clean and counterfactual runs of a batch: prefixes, last logits, cached suffix activations."""
    clean_logits, prefix, pos, clean_cache = _suffix_run(config, params, batch.clean, batch.mask, positions, clean_sites)
    cf_logits, _, _, cf_values = _suffix_run(config, params, batch.cf, batch.mask, positions, cf_sites)
    return Prepared(prefix, batch.clean[:, -positions:], pos, cf_values, clean_logits, cf_logits, clean_cache)


def run_sweep(name: str, config: MistralConfig, params, prepared: Prepared, metric: WeightedLD, chunk_size: int | None) -> np.ndarray:
    """One sweep (``SWEEPS[name]``): the weighted LD sum of every cell, one compiled call."""
    site, over = SWEEPS[name]
    values = {block_site(l, site): prepared.cf_values[block_site(l, site)] for l in range(config.num_layers)}
    out = patching_sweep(
        make_suffix_forward(config, True), params, prepared.suffix, values, metric, site, over,
        layers=config.num_layers, chunk_size=chunk_size, forward_kwargs=prepared.forward_kwargs,
    )
    return np.asarray(jax.device_get(out), np.float64)


def run_attribution(config: MistralConfig, params, prepared: Prepared, metric: WeightedLD, name: str = "head_z") -> np.ndarray:
    """First-order estimate of every cell's ``sum_b weight (LD_patched - LD_clean)`` (one backward)."""
    site, over = SWEEPS[name]
    values = {block_site(l, site): prepared.cf_values[block_site(l, site)] for l in range(config.num_layers)}
    out = attribution_sweep(
        make_suffix_forward(config, True), params, prepared.suffix, values, metric, site, over,
        layers=config.num_layers, forward_kwargs=prepared.forward_kwargs,
    )
    return np.asarray(jax.device_get(out), np.float64)


@dataclasses.dataclass
class Totals:
    """Weighted sums over batches; ``finish`` gives the means and effects."""

    effect_kind: str = "normalized"  # or "delta_ld" (rule_order)
    count: float = 0.0
    clean: float = 0.0
    cf: float = 0.0
    sweeps: dict = dataclasses.field(default_factory=dict)
    attribution: dict = dataclasses.field(default_factory=dict)

    def add_batch(self, prepared: Prepared, metric: WeightedLD) -> None:
        weight = np.asarray(metric.weight, np.float64)
        self.count += float(weight.sum())
        self.clean += float(jax.device_get(metric(prepared.clean_logits[:, None])))
        self.cf += float(jax.device_get(metric(prepared.cf_logits[:, None])))

    def add(self, table: dict, name: str, value: np.ndarray) -> None:
        table[name] = table.get(name, 0.0) + value

    def mean_clean(self) -> float:
        return self.clean / self.count

    def mean_cf(self) -> float:
        return self.cf / self.count

    def defined(self) -> bool:
        """False where normalised effects mean nothing: LD_clean = LD_cf (raw deltas always do)."""
        return self.effect_kind == "delta_ld" or effect_defined(self.mean_clean(), self.mean_cf())

    def effect(self, patched_sum: np.ndarray) -> np.ndarray:
        """The effect of summed patched LDs (see the module docstring for ``effect_kind``); NaN if undefined."""
        patched = np.asarray(patched_sum) / self.count
        if self.effect_kind == "delta_ld":
            return patched - self.mean_clean()
        if not self.defined():
            return np.full(patched.shape, np.nan)
        return np.asarray(normalized_effect(patched, self.mean_clean(), self.mean_cf()))

    def effects(self) -> dict[str, np.ndarray]:
        return {name: self.effect(value) for name, value in self.sweeps.items()}

    def attribution_effects(self) -> dict[str, np.ndarray]:
        """Attribution estimates (sums of patched - clean) on the scale of ``effects``."""
        out = {}
        for name, value in self.attribution.items():
            delta = np.asarray(value) / self.count
            if self.effect_kind == "delta_ld":
                out[name] = delta
            else:
                out[name] = delta / (self.mean_cf() - self.mean_clean()) if self.defined() else np.full(delta.shape, np.nan)
        return out
