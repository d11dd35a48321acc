"""The trainer's config: the keys every config file has, checks, and typed views of it.

Config files (``configs/*.py``) start from ``base_config()`` and change values; a key that is
not in the base is an error naming it. ``model``, ``problem`` and ``optim`` are sub-dicts; the
first two become the frozen ``GPTConfig`` and ``ProblemConfig`` (static under jit), ``optim``
becomes per-seed arrays (so a sweep can vmap over learning rates).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

import ml_collections

from logic_jax.models.gpt import GPTConfig, GPTConfigError
from logic_jax.problem.config import ConfigError as ProblemConfigError
from logic_jax.problem.config import MAX_SEED, ProblemConfig
from logic_jax.problem import format as fmt
from logic_jax.train.evaluate import MAX_PROBLEMS


class ConfigError(ValueError):
    """A trainer config that cannot run; the message names the key."""


# Keys that change how long or how a run is carried out, not what it computes: a workdir
# may be resumed with other values of these.
RUN_LENGTH_KEYS = (
    "num_steps",
    "steps_per_call",
    "checkpoint_every",
    "eval_every",
    "eval_size",
    "keep_checkpoints",
    "num_devices",
    "progress",
    "model.remat",  # memory: the same gradients, recomputed
    "model.attention",  # speed: the same math, another kernel
)

OPTIM_KEYS = ("lr", "warmup_steps", "decay_steps", "end_lr_frac", "weight_decay", "b1", "b2", "eps", "clip_norm")


def _placeholder(field: dataclasses.Field):
    if field.default is not None:
        return field.default
    kind = str if "str" in str(field.type) else bool
    return ml_collections.config_dict.placeholder(kind)


def base_config() -> ml_collections.ConfigDict:
    """Every key a trainer config has, with defaults (the paper's model shape)."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # seed i of a run uses fold_in(PRNGKey(seed), i)
    c.num_seeds = 4
    c.num_steps = 1000
    c.batch_size = 256  # problems per step and seed
    c.steps_per_call = 50  # train steps per compiled call (lax.scan)
    c.checkpoint_every = 500
    c.eval_every = 500  # greedy-decoding evaluation; 0: only at the end
    c.eval_size = 1024  # held-out problems per evaluation (the same ones at every evaluation)
    c.keep_checkpoints = 3
    c.num_devices = 0  # devices of the seed mesh; 0: all (num_seeds must be a multiple)
    c.progress = True  # tqdm progress bar
    # dtype "bfloat16": bfloat16 activations (float32 parameters and optimizer); matmul_precision:
    # jax.default_matmul_precision of the float32 matmuls (GPU "default" may use TF32); remat:
    # what the backward pass keeps of a block ("none", "block", "dots": models/gpt.py REMATS);
    # attention: "fused" for cuDNN's flash attention with bfloat16 on a GPU (models/gpt.py ATTENTIONS).
    c.model = ml_collections.ConfigDict(
        dict(n_layers=3, n_heads=3, d_model=96, d_mlp=384, ln_eps=1e-5, init_std=0.02, dtype="float32", matmul_precision="default", remat="none", attention="einsum")
    )
    # None defaults become typed placeholders, so --config.problem.fix_op=or can set them.
    c.problem = ml_collections.ConfigDict({f.name: _placeholder(f) for f in dataclasses.fields(ProblemConfig)})
    # AdamW; linear warm-up to lr, cosine decay to lr * end_lr_frac at decay_steps, then flat.
    c.optim = ml_collections.ConfigDict(
        dict(lr=3e-3, warmup_steps=100, decay_steps=1000, end_lr_frac=0.1, weight_decay=0.1, b1=0.9, b2=0.99, eps=1e-8, clip_norm=1.0)
    )
    return c


def to_dict(config) -> dict[str, Any]:
    """A plain, JSON-able dict (ConfigDict, FrozenConfigDict or dict)."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return json.loads(json.dumps(config))


def with_overrides(config, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of the config with dotted keys set (``{"model.remat": "dots"}``)."""
    config = ml_collections.ConfigDict(to_dict(config))
    config.update_from_flattened_dict(dict(overrides))
    return config


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _int(config, key, minimum):
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"config key '{key}': must be an integer >= {minimum}, got {value!r}")


def check(config, *, extra_keys: tuple[str, ...] = ()) -> None:
    """Unknown keys and bad values, each an error naming the key."""
    d = to_dict(config)
    known = set(flatten(to_dict(base_config())))
    given = {k for k in flatten(d) if k.split(".")[0] not in extra_keys}
    # A problem/model sub-dict may legitimately be empty of a key; the base has them all.
    unknown = sorted(given - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}")
    for key, minimum in (("num_seeds", 1), ("num_steps", 0), ("batch_size", 1), ("steps_per_call", 1), ("checkpoint_every", 1), ("eval_every", 0), ("eval_size", 1), ("keep_checkpoints", 1), ("num_devices", 0)):
        _int(d, key, minimum)
    if d["eval_size"] > MAX_PROBLEMS:
        raise ConfigError(f"config key 'eval_size': must be at most {MAX_PROBLEMS:,} (the held-out problems are sampled at once and kept in memory), got {d['eval_size']:,}")
    _int(d, "seed", 0)
    if d["seed"] > MAX_SEED:
        raise ConfigError(f"config key 'seed': must be at most {MAX_SEED} (jax.random keeps 32 bits: {d['seed']} would repeat seed {d['seed'] % 2**32}), got {d['seed']}")
    problem_config(d)
    model_config(d)
    o = d["optim"]
    for key in ("warmup_steps", "decay_steps"):
        if not isinstance(o[key], int) or o[key] < 0:
            raise ConfigError(f"config key 'optim.{key}': must be an integer >= 0, got {o[key]!r}")
    for key in ("lr", "weight_decay", "eps", "clip_norm", "end_lr_frac"):
        if not isinstance(o[key], (int, float)) or not math.isfinite(o[key]) or o[key] < 0:
            raise ConfigError(f"config key 'optim.{key}': must be a finite number >= 0, got {o[key]!r}")
    if o["clip_norm"] == 0:  # clip_by_global_norm(0) zeroes every gradient
        raise ConfigError("config key 'optim.clip_norm': must be > 0 (the global norm gradients are clipped to), got 0")
    if o["eps"] == 0:  # Adam divides by sqrt(nu) + eps: 0/0 at the first step of a zero gradient
        raise ConfigError("config key 'optim.eps': must be > 0 (Adam's denominator is sqrt(nu) + eps), got 0")
    for key in ("b1", "b2"):
        if not 0 <= o[key] < 1:
            raise ConfigError(f"config key 'optim.{key}': must be in [0, 1), got {o[key]!r}")


def problem_config(config) -> ProblemConfig:
    try:
        return ProblemConfig.from_mapping(to_dict(config)["problem"])
    except ProblemConfigError as e:
        raise ConfigError(f"config key 'problem': {e}") from None


def model_config(config) -> GPTConfig:
    d = to_dict(config)
    depth = problem_config(d).depth
    try:
        return GPTConfig.from_mapping(dict(d["model"], vocab_size=fmt.VOCAB_SIZE, max_len=fmt.seq_len(depth)))
    except GPTConfigError as e:
        raise ConfigError(f"config key 'model': {e}") from None


def differences(saved: Mapping[str, Any], new: Mapping[str, Any], ignore=RUN_LENGTH_KEYS) -> list[str]:
    """Keys whose values differ (or exist in one only), run-length keys ignored.

    A key that one side lacks but the base config has counts as its default there: a run
    written before the key existed computed what the default computes.
    """
    base = flatten(to_dict(base_config()))
    a, b = {**base, **flatten(to_dict(saved))}, {**base, **flatten(to_dict(new))}
    keys = sorted((set(a) | set(b)) - set(ignore))
    return [f"{k}: {a.get(k, '<missing>')!r} -> {b.get(k, '<missing>')!r}" for k in keys if a.get(k, "<missing>") != b.get(k, "<missing>")]


def run_length_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The run-length keys a resumed run changes (``progress`` aside), as ``differences`` words them."""
    others = [k for k in flatten(to_dict(base_config())) if k not in RUN_LENGTH_KEYS or k == "progress"]
    return differences(saved, new, ignore=others)
