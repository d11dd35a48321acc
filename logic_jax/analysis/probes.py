"""Claim 4: affine probes for the first answer token on the residual stream.

A probe is multinomial logistic regression over the 26 letters, ``softmax(W x + b)``, on the
residual stream at one (stage, position); features are standardised with the training set's
mean and standard deviation (an affine map, so the probe stays affine), the loss has a small L2
penalty on W, and it is fit by full-batch Adam. Every (stage, position) probe trains at once
under ``jax.vmap``.

Stages are the residual stream before block 0 and after each block's attention and MLP:
``embed`` = blocks.0.hook_resid_pre, ``L{i+1} attn`` = blocks.{i}.hook_resid_mid and
``L{i+1}`` = blocks.{i}.hook_resid_post (paper numbering: "after layer 2" is ``L2`` =
blocks.1.hook_resid_post). Positions are the question's: QUERY, '.', END_QUESTION, ANSWER.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from logic_jax.analysis import common
from logic_jax.interp.hooks import block_site
from logic_jax.problem import format as fmt
from logic_jax.problem.sampler import Batch

POSITIONS = ("QUERY", ".", "END_Q", "ANSWER")  # offsets 0..3 from QUERY


def stages(n_layers: int) -> tuple[tuple[str, str], ...]:
    """``(name, site)`` of each probed point of the residual stream, in forward order."""
    out = [("embed", block_site(0, "hook_resid_pre"))]
    for i in range(n_layers):
        out += [(f"L{i + 1} attn", block_site(i, "hook_resid_mid")), (f"L{i + 1}", block_site(i, "hook_resid_post"))]
    return tuple(out)


def stage_after(layer: int) -> str:
    """The stage name after block ``layer`` (0-indexed): ``stage_after(1)`` -> ``"L2"``."""
    return f"L{layer + 1}"


@functools.partial(jax.jit, static_argnames=("forward", "names"))
def _features(params, tokens, *, forward, names):
    _, cache = forward(params, tokens, None, names)
    q = tokens.shape[1] - len(POSITIONS)  # the context ends QUERY . END_Q ANSWER
    return jnp.stack([cache[n][:, q:, :].transpose(1, 0, 2) for n in names])  # [S, P, B, d]


def features(forward, params, batch: Batch, n_layers: int, chunk: int = 1024) -> np.ndarray:
    """``[stages, positions, B, d_model]`` residual-stream features."""
    names = tuple(site for _, site in stages(n_layers))
    tokens = common.context(batch)
    if int(batch.query_pos[0]) != tokens.shape[1] - len(POSITIONS):
        raise common.AnalysisError(f"QUERY at {int(batch.query_pos[0])} is not {len(POSITIONS) - 1} positions before ANSWER")
    fn = lambda p, t: jnp.moveaxis(_features(p, t, forward=forward, names=names), 2, 0)  # noqa: E731  (chunks on axis 0)
    return np.moveaxis(common.map_chunks(fn, params, [tokens], chunk), 0, 2)


@functools.partial(jax.jit, static_argnames=("n_classes", "steps"))
def fit(x, y, *, n_classes: int = fmt.NUM_LETTERS, steps: int = 300, lr: float = 0.05, l2: float = 1e-3):
    """One probe on ``x [N, d]``, labels ``y [N]``: ``(W [d, C], b [C], mean [d], scale [d])``."""
    x = x.astype(jnp.float32)  # a bfloat16 model's features: its mean and deviation in float32
    mean = x.mean(0)
    scale = 1.0 / (x.std(0) + 1e-6)
    xs = (x - mean) * scale
    onehot = jax.nn.one_hot(y, n_classes)
    params = (jnp.zeros((x.shape[1], n_classes)), jnp.zeros((n_classes,)))
    opt = optax.adam(lr)

    def loss(p):
        logits = xs @ p[0] + p[1]
        return optax.softmax_cross_entropy(logits, onehot).mean() + l2 * jnp.sum(p[0] ** 2)

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params[0], params[1], mean, scale


def predict(probe, x):
    w, b, mean, scale = probe
    return jnp.argmax(((x - mean) * scale) @ w + b, axis=-1)


@functools.partial(jax.jit, static_argnames=("steps",))
def _grid(x_train, y_train, x_test, y_test, *, steps, l2):
    def one(xtr, xte):
        probe = fit(xtr, y_train, steps=steps, l2=l2)
        return (predict(probe, xtr) == y_train).mean(), (predict(probe, xte) == y_test).mean()

    return jax.vmap(jax.vmap(one))(x_train, x_test)


def probe_grid(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, steps: int = 300, l2: float = 1e-3) -> dict:
    """Train/test accuracy ``[stages, positions]`` of a probe per cell of ``[S, P, N, d]`` features."""
    if x_train.shape[:2] != x_test.shape[:2] or x_train.shape[-1] != x_test.shape[-1]:
        raise common.AnalysisError(f"probe features: train {x_train.shape} and test {x_test.shape} differ in stages, positions or width")
    if x_train.shape[2] != len(y_train) or x_test.shape[2] != len(y_test):
        raise common.AnalysisError(f"probe features: {x_train.shape[2]} / {x_test.shape[2]} rows but {len(y_train)} / {len(y_test)} labels")
    train, test = _grid(jnp.asarray(x_train), jnp.asarray(y_train), jnp.asarray(x_test), jnp.asarray(y_test), steps=steps, l2=float(l2))
    return dict(train=np.asarray(train), test=np.asarray(test))


def run(forward, params, train: Batch, test: Batch, n_layers: int, steps: int = 300, l2: float = 1e-3, chunk: int = 1024) -> dict:
    """Probe accuracies for the first answer token of ``train``/``test`` problems (one query type)."""
    x_train = features(forward, params, train, n_layers, chunk)
    x_test = features(forward, params, test, n_layers, chunk)
    out = probe_grid(x_train, np.asarray(train.first_answer), x_test, np.asarray(test.first_answer), steps, l2)
    return dict(out, stages=[name for name, _ in stages(n_layers)], positions=list(POSITIONS), n_train=len(train.first_answer), n_test=len(test.first_answer))
