"""Hook points shared by every model: cache and patch TransformerLens-named sites.

A model calls ``hooks(name, x)`` at each of its sites and uses the returned value. The
``Hooks`` object only lives during tracing; what crosses the pure ``forward`` boundary is
data: ``patches`` (a dict of site name -> ``Patch``, a pytree) and ``cache`` (a tuple of
site names). Every model exposes

    forward(params, tokens, patches=None, cache=()) -> (logits, {site: activation})

so a patching sweep is ``jax.vmap`` over the arrays inside ``patches``, one compiled call.

Site names and shapes follow TransformerLens (batch first):

    hook_embed, hook_pos_embed (small model only)   [batch, pos, d_model]
    blocks.{i}.hook_resid_pre / hook_resid_mid / hook_resid_post
    blocks.{i}.hook_attn_out / hook_mlp_out          [batch, pos, d_model]
    blocks.{i}.attn.hook_q / hook_z                  [batch, pos, n_heads, d_head]
    blocks.{i}.attn.hook_k / hook_v                  [batch, pos, n_kv_heads, d_head]
    blocks.{i}.attn.hook_rot_q / hook_rot_k          (after rotary; rotary models only)
    blocks.{i}.attn.hook_attn_scores / hook_pattern  [batch, n_heads, query_pos, key_pos]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

Array = Any

BLOCK_SITES = (
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
)
ATTN_SITES = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_attn_scores", "hook_pattern")
ROTARY_SITES = ("hook_rot_q", "hook_rot_k")


def block_site(layer: int, site: str) -> str:
    """``block_site(2, "hook_z")`` -> ``"blocks.2.attn.hook_z"``."""
    if site in BLOCK_SITES:
        return f"blocks.{layer}.{site}"
    if site in ATTN_SITES or site in ROTARY_SITES:
        return f"blocks.{layer}.attn.{site}"
    raise ValueError(f"unknown site {site!r}; known: {BLOCK_SITES + ATTN_SITES + ROTARY_SITES}")


def site_names(n_layers: int, rotary: bool = False, embed: bool = True) -> tuple[str, ...]:
    """Every site a model with ``n_layers`` blocks exposes, in forward order."""
    names = ["hook_embed", "hook_pos_embed"] if embed else []
    per_block = BLOCK_SITES + ATTN_SITES + (ROTARY_SITES if rotary else ())
    for layer in range(n_layers):
        names += [block_site(layer, s) for s in per_block]
    return tuple(names)


def concrete(x: Any) -> np.ndarray | None:
    """The value of ``x`` as numpy if it is known at trace time (outside jit and vmap), else None."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Patch:
    """An intervention on one site: ``where(mask, value + add, x)``.

    Every field broadcasts against the site's activation. ``value=None`` starts from ``x``
    (``Patch(mask=m, add=v)`` steers by ``v`` where ``m``); ``mask=None`` patches everywhere;
    ``add=None`` adds nothing. A zero-ablation is ``Patch(value=0.0, mask=m)``, a
    mean-ablation passes the mean.
    """

    value: Array | None = None
    mask: Array | None = None
    add: Array | None = None

    def apply(self, x: Array, site: str = "the site") -> Array:
        # Shapes and dtypes are static even under jit/vmap: a bad patch fails here, naming the site.
        for name in ("value", "mask", "add"):
            field = getattr(self, name)
            if field is None:
                continue
            shape = np.shape(field)
            try:
                np.broadcast_shapes(shape, x.shape)
            except ValueError:
                raise ValueError(f"Patch.{name} of shape {shape} does not broadcast against {site}'s activation {x.shape}") from None
        if self.mask is not None and jnp.result_type(self.mask) != jnp.bool_:
            raise TypeError(f"Patch.mask at {site} must be boolean, got {jnp.result_type(self.mask)}: a 0.5 would patch as True")
        patched = x if self.value is None else jnp.broadcast_to(jnp.asarray(self.value, x.dtype), x.shape)
        if self.add is not None:
            patched = patched + jnp.asarray(self.add, x.dtype)
        return patched if self.mask is None else jnp.where(self.mask, patched, x)


class Hooks:
    """Trace-time hook state for one forward pass."""

    def __init__(self, patches: Mapping[str, Patch] | None = None, cache: Iterable[str] = (), known: Iterable[str] | None = None):
        self.patches = dict(patches or {})
        for name, patch in self.patches.items():
            if not isinstance(patch, Patch):
                raise TypeError(f"patches[{name!r}] must be a Patch (e.g. Patch(value=v, mask=m)), got {type(patch).__name__}")
        self.cache_names = tuple(cache)
        self.cache: dict[str, Array] = {}
        self.seen: list[str] = []  # every call, in order (a site called twice would be patched twice)
        if known is not None:
            check_sites(set(self.patches) | set(self.cache_names), known)

    @property
    def passive(self) -> bool:
        """Nothing patched, nothing cached: the forward computes what it would without hooks."""
        return not self.patches and not self.cache_names

    def __call__(self, name: str, x: Array) -> Array:
        self.seen.append(name)
        if name in self.patches:
            x = self.patches[name].apply(x, name)
        if name in self.cache_names:
            self.cache[name] = x
        return x


def check_sites(requested: Iterable[str], known: Iterable[str]) -> None:
    """Raise a ``KeyError`` naming every requested site the model does not have."""
    known = set(known)
    unknown = sorted(set(requested) - known)
    if unknown:
        example = sorted(known)[:4]
        raise KeyError(f"unknown hook site(s) {unknown}; site names look like {example}")
