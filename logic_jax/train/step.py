"""The pure training step and its compiled, vmapped, sharded form (purejaxrl style).

``make_train(model_cfg, problem_cfg, batch_size, mesh)`` returns pure functions over one
member's state; ``Train.init`` and ``Train.chunk`` are those functions vmapped over the
leading member (seed) axis, with every state leaf sharded over the mesh axis ``seeds``.
Problems are sampled inside the step from the step's key: no host input pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from logic_jax.models import gpt
from logic_jax.problem import format as fmt
from logic_jax.problem.config import ProblemConfig
from logic_jax.problem.sampler import sample
from logic_jax.train.state import TrainState, data_key, init_state, optimizer

SEED_AXIS = "seeds"


class MeshError(ValueError):
    """Members that do not divide over the devices; the message names both counts."""


def make_mesh(num_members: int, num_devices: int = 0) -> Mesh:
    """A 1-D mesh over ``num_devices`` devices (0: all), axis ``seeds``: the first ones, or in a
    multi-process run the first ``num_devices / processes`` of every process (each process must
    hold a share of the mesh, or it could not take part in the run)."""
    available, processes = jax.device_count(), jax.process_count()
    n = available if num_devices == 0 else num_devices
    if n > available:
        raise MeshError(f"num_devices={n} but only {available} device(s) are visible")
    if n % processes:
        raise MeshError(f"num_devices={n} is not a multiple of the process count {processes}: every process takes the same number of devices")
    if num_members % n:
        raise MeshError(
            f"num_seeds={num_members} (members of this run) is not a multiple of the device count {n}; "
            f"use a multiple of {n} seeds or set --config.num_devices to a divisor of {num_members}"
        )
    by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(processes)]
    devices = [d for local in by_process for d in local[: n // processes]]
    return jax.make_mesh((n,), (SEED_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def loss_fn(params, tokens, answer_mask, forward, first_token_weight: float = 1.0, logits_from: int = 0, context_weight: float = 0.0):
    """Teacher-forced next-token cross-entropy on the answer tokens (EOS included).

    ``first_token_weight`` scales the first answer token's term (the planning decision) and
    ``context_weight`` > 0 adds the context's tokens (those predicted before ``logits_from``)
    with that weight; the trainer uses 1 and 0, bench/train_trials.py tries others.
    ``logits_from``: the first position whose prediction can be an answer token (the ANSWER
    token's; ``answer_mask`` is 0 before), so the forward skips the logits before it.
    """
    start = 0 if context_weight else logits_from  # the context's loss needs every position's logits
    logits, _ = forward(params, tokens[:, :-1], logits_from=start)
    targets, mask = tokens[:, 1 + start :], answer_mask[:, 1 + start :].astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    n = jnp.maximum(mask.sum(), 1.0)
    correct = (logits.argmax(-1) == targets).astype(jnp.float32)
    weights = mask
    if first_token_weight != 1.0:
        weights = mask + (first_token_weight - 1.0) * mask * (jnp.cumsum(mask, axis=1) == 1)
    if context_weight:
        weights = weights + context_weight * (jnp.arange(targets.shape[1]) < logits_from)[None]
    return (ce * weights).sum() / n, (correct * mask).sum() / n


def make_update(model_cfg: gpt.GPTConfig, problem_cfg: ProblemConfig):
    """``update(state, tokens, answer_mask) -> (state, (loss, token_accuracy))``: one member's
    optimizer step on a given batch."""
    forward = gpt.make_forward(model_cfg)
    # The context has a fixed length: its last token, ANSWER, is the first to predict the answer.
    first_prediction = fmt.answer_pos(problem_cfg.depth)

    def update(state: TrainState, tokens, answer_mask):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, acc), grads = grad_fn(state.params, tokens, answer_mask, forward, logits_from=first_prediction)
        updates, opt_state = optimizer(state.hparams).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), (loss, acc)

    return update


def make_step(model_cfg: gpt.GPTConfig, problem_cfg: ProblemConfig, batch_size: int):
    """``train_step(state) -> (state, (loss, token_accuracy))`` for one member: a batch sampled
    from the step's key, then ``make_update``'s step on it."""
    update = make_update(model_cfg, problem_cfg)

    def train_step(state: TrainState):
        batch = sample(data_key(state.key, state.step), problem_cfg, batch_size)
        return update(state, batch.tokens, batch.answer_mask)

    return train_step


@dataclasses.dataclass
class Train:
    """Compiled, vmapped functions over stacked member states."""

    mesh: Mesh
    init: Callable  # (keys [M, 2], hparams {k: [M]}) -> stacked TrainState
    chunk: Callable  # (state, n) -> (state, {"loss": [M, n], "token_acc": [M, n], "params_finite": [M]})
    step_fn: Callable  # the un-vmapped single-member step (for tests and benchmarks)

    @property
    def sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, P(SEED_AXIS))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())


@functools.lru_cache(maxsize=16)  # one compiled program per shape, across runs in a process
def make_train(model_cfg: gpt.GPTConfig, problem_cfg: ProblemConfig, batch_size: int, mesh: Mesh) -> Train:
    step_fn = make_step(model_cfg, problem_cfg, batch_size)
    seeds, replicated = NamedSharding(mesh, P(SEED_AXIS)), NamedSharding(mesh, P())

    def run(state: TrainState, n: int):
        state, (loss, acc) = jax.lax.scan(lambda s, _: step_fn(s), state, None, length=n)
        # A step's loss is computed before its update: an update that overflows on the chunk's
        # last step shows only in the parameters, which are about to be checkpointed.
        finite = jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(state.params)]))
        return state, {"loss": loss, "token_acc": acc, "params_finite": finite}

    # Every state leaf has the member axis first, so one NamedSharding is the prefix for all.
    # The state is not donated: an async checkpoint may still be reading the previous one.
    init = jax.jit(
        jax.vmap(functools.partial(init_state, model_cfg=model_cfg)),
        in_shardings=(replicated, replicated),
        out_shardings=seeds,
    )
    chunk = jax.jit(
        jax.vmap(run, in_axes=(0, None)),
        static_argnums=1,
        in_shardings=(seeds,),
        out_shardings=(seeds, replicated),
    )
    return Train(mesh=mesh, init=init, chunk=chunk, step_fn=step_fn)


def to_host(tree):
    """Fetch replicated or fully addressable arrays to numpy."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
