"""The per-seed training state and the optimizer built from per-seed hyperparameters.

Everything that differs between the members of one vmapped run lives in ``TrainState``:
parameters, optimizer state, the member's key, its step and its optimizer hyperparameters
(arrays, so one sweep group can train several learning rates under one vmap). Checkpointing
this pytree, stacked over members, is checkpointing the run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from logic_jax.models import gpt
from logic_jax.train.config import OPTIM_KEYS


@struct.dataclass
class TrainState:
    step: jax.Array  # int32: steps taken
    key: jax.Array  # uint32[2]: the member's root key; data keys are fold_in(key, step)
    params: Any
    opt_state: Any
    hparams: dict  # float32 scalars, OPTIM_KEYS


@dataclasses.dataclass(frozen=True)
class Member:
    """One trained model of a vmapped run: a seed index and its optimizer hyperparameters."""

    seed: int  # the config's seed
    index: int  # seed index i: the member key is fold_in(PRNGKey(seed), i)
    optim: tuple[tuple[str, float], ...]  # sorted (key, value) pairs of OPTIM_KEYS
    point: int = 0  # sweep grid point (0 outside sweeps)

    def to_dict(self) -> dict:
        return dict(seed=self.seed, index=self.index, optim=dict(self.optim), point=self.point)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Member":
        return cls(int(d["seed"]), int(d["index"]), tuple(sorted(d["optim"].items())), int(d.get("point", 0)))


def members_of(config, point: int = 0) -> list[Member]:
    optim = tuple(sorted((k, float(config["optim"][k])) for k in OPTIM_KEYS))
    return [Member(int(config["seed"]), i, optim, point) for i in range(int(config["num_seeds"]))]


def spans_points(members: Sequence[Member]) -> bool:
    """Whether the members are a sweep group's (several grid points), named by point and seed."""
    return len({m.point for m in members}) > 1


def differing_optim(members: Sequence[Mapping]) -> list[str]:
    """The optim keys whose values differ between members (as dicts): what tells a group's points apart."""
    return sorted(k for k in members[0]["optim"] if len({m["optim"][k] for m in members}) > 1)


def member_key(member: Member) -> np.ndarray:
    return np.asarray(jax.random.fold_in(jax.random.PRNGKey(member.seed), member.index))


def stack_members(members: Sequence[Member]) -> tuple[np.ndarray, dict]:
    """Keys [M, 2] and hyperparameters {name: [M]} of a member list."""
    keys = np.stack([member_key(m) for m in members])
    hparams = {k: np.asarray([dict(m.optim)[k] for m in members], np.float32) for k in OPTIM_KEYS}
    return keys, hparams


# Separate streams of one member key, so that adding a use never shifts another.
INIT_STREAM, DATA_STREAM = 0, 1


def data_key(key: jax.Array, step: jax.Array) -> jax.Array:
    """The key of one step's problems: a function of (member key, step) only, so resuming
    at step s samples what an uninterrupted run samples at s."""
    return jax.random.fold_in(jax.random.fold_in(key, DATA_STREAM), step)


def schedule(hp: Mapping[str, jax.Array]):
    """Linear warm-up to ``lr``, cosine to ``lr * end_lr_frac`` at ``decay_steps``, then flat."""

    def lr(count):
        t = count.astype(jnp.float32)
        warm = hp["warmup_steps"]
        frac = jnp.clip((t - warm) / jnp.maximum(hp["decay_steps"] - warm, 1.0), 0.0, 1.0)
        end = hp["end_lr_frac"]
        cosine = end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
        return hp["lr"] * jnp.where(t < warm, (t + 1.0) / jnp.maximum(warm, 1.0), cosine)

    return lr


def decay_mask(params):
    """Weight decay on the weight matrices (``W_*``) only: not on biases, which are 2-D for b_Q and
    b_V ([heads, d_head]), nor on LayerNorm (GPT-2 practice; bench/torch_reference.py does the same)."""
    def decayed(path, x):
        name = str(getattr(path[-1], "key", ""))
        return x.ndim >= 2 and name.startswith("W_")

    return jax.tree_util.tree_map_with_path(decayed, params)


def optimizer(hp: Mapping[str, jax.Array]) -> optax.GradientTransformation:
    """AdamW with clipping; ``hp`` may hold traced arrays (the state's structure does not
    depend on their values, so every member shares one optimizer-state structure)."""
    return optax.chain(
        optax.clip_by_global_norm(hp["clip_norm"]),
        optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"]),
        optax.add_decayed_weights(hp["weight_decay"], mask=decay_mask),
        optax.scale_by_learning_rate(schedule(hp)),
    )


def init_state(key: jax.Array, hparams: Mapping[str, jax.Array], model_cfg: gpt.GPTConfig) -> TrainState:
    """One member's fresh state (vmap it over members)."""
    params = gpt.init_params(jax.random.fold_in(key, INIT_STREAM), model_cfg)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        key=key,
        params=params,
        opt_state=optimizer(hparams).init(params),
        hparams=dict(hparams),
    )
