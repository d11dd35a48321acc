r"""Short training trials of a config: exact match per seed every few hundred steps.

    python bench/train_trials.py --config.num_seeds=4 --max_seconds=780           # tiny_cpu as is
    python bench/train_trials.py --config.model.n_heads=4 --config.num_seeds=4
    python bench/train_trials.py --first_token_weight=5 --config.num_seeds=4
    python bench/train_trials.py --hard_fraction=0.25 --config.num_seeds=4
    python bench/train_trials.py --sinusoidal_positions=0.02 --config.num_seeds=4
    python bench/train_trials.py --linear_fraction=0.3 --config.num_seeds=4 --max_seconds=1250
    python bench/train_trials.py --context_weight=0.5 --config.num_seeds=4 --max_seconds=1250
    python bench/train_trials.py --prev_token_weight=1 --config.num_seeds=4 --max_seconds=1250
    python bench/train_trials.py --init_from=/tmp/runs/tiny8 --init_members=4,5,6,7 --config.num_seeds=4 \
        --config.num_steps=3000 --config.optim.decay_steps=3000 --max_seconds=2700   # a warm restart

For trying recipes quickly (no checkpoints, no logs): the trainer's compiled chunk, then greedy
evaluation of 512 held-out problems per seed. Six benchmark-only changes, made by replacing
``loss_fn`` / ``sample`` of ``logic_jax.train.step`` or ``logic_jax.models.gpt.init_params``
before they are used (the loss with ``first_token_weight`` and ``context_weight``, or with an
auxiliary term, a sampler that mixes in chosen cases, an init that overwrites ``W_pos``):
``--first_token_weight`` multiplies the loss of the first answer token (the planning
decision); ``--hard_fraction`` draws that share of every batch, half and half, from the two
LogOp cases whose proof starts with the rule's second operand (OR with (FALSE, TRUE), AND with
(TRUE, FALSE)); ``--linear_fraction`` draws that share of every batch as linear queries (the
evaluation keeps the config's mix); ``--sinusoidal_positions`` starts the learned positional embeddings from
sinusoids of that RMS (instead of noise of std 0.01), which might ease the previous-token head
that the fact lookup needs; ``--context_weight`` adds the next-token loss on the context's tokens,
with that weight against the answer's (its layout varies with the chain order and the
operator, so predicting it rewards reading the previous token: the previous-token head that the
lookup lacks in stuck seeds); ``--prev_token_weight`` adds, with that weight, an auxiliary
cross-entropy that asks the residual stream after the first block, at each fact's truth value,
for the letter before it, read through the embedding matrix (no parameter added): it supervises
the previous-token head directly, a causal test of whether that head is what stuck seeds miss.
None helped tiny_cpu (BENCHMARKS.md), so none is a trainer option.
``--init_from`` starts the chosen seeds (``--init_members``) from a run's newest checkpoint
with a fresh optimizer and schedule: a warm restart of seeds stuck on the plateau.
"""

import dataclasses
import functools
import os
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from logic_jax.analysis.lookup import fact_positions  # noqa: E402
from logic_jax.models import gpt  # noqa: E402
from logic_jax.problem import format as fmt  # noqa: E402
from logic_jax.train import config as config_lib  # noqa: E402
from logic_jax.train import evaluate as evaluate_lib  # noqa: E402
from logic_jax.train import inspection  # noqa: E402
from logic_jax.train import step as step_lib  # noqa: E402
from logic_jax.train.state import members_of, stack_members  # noqa: E402
from logic_jax.train.trainer import eval_key  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F = flags.FLAGS


def define_flags():
    """The script's flags, defined only when it runs (so that tests can import its functions)."""
    config_flags.DEFINE_config_file("config", os.path.join(REPO, "configs", "tiny_cpu.py"), "The run config.")
    flags.DEFINE_float("max_seconds", 780, "Stop after the first evaluation past this wall time.")
    flags.DEFINE_integer("every", 500, "Steps between evaluations.")
    flags.DEFINE_float("first_token_weight", 1.0, "Loss weight of the first answer token (1: the trainer's loss).")
    flags.DEFINE_float("hard_fraction", 0.0, "Share of each batch from the two second-operand LogOp cases.")
    flags.DEFINE_float("linear_fraction", 0.0, "Share of each batch drawn as linear queries (evaluation keeps the config's mix).")
    flags.DEFINE_float("context_weight", 0.0, "Weight of the next-token loss on the context's tokens (0: answer tokens only).")
    flags.DEFINE_float("prev_token_weight", 0.0, "Weight of the auxiliary loss naming each fact's letter at its truth value after block 0 (0: none).")
    flags.DEFINE_float("sinusoidal_positions", 0.0, "RMS of a sinusoidal W_pos at init (0: the model's normal init).")
    flags.DEFINE_string("init_from", None, "A training workdir: start from its newest checkpoint's parameters (fresh optimizer and schedule).")
    flags.DEFINE_list("init_members", None, "With --init_from: which of its seeds, by index (default: the first --config.num_seeds).")


SECOND_OPERAND_CASES = (
    dict(fix_query="logop", fix_op="or", fix_truth_first=False, fix_truth_second=True),
    dict(fix_query="logop", fix_op="and", fix_truth_first=True, fix_truth_second=False),
)


def mixed_sampler(shares):
    """A sampler whose batches draw each ``(fraction, case)`` share from that case, the rest as configured."""
    sample = step_lib.sample

    def mixed(key, cfg, batch_size):
        sizes = [int(round(batch_size * fraction)) for fraction, _ in shares]
        keys = jax.random.split(key, len(shares) + 1)
        parts = [sample(keys[0], cfg, batch_size - sum(sizes))]
        parts += [sample(k, dataclasses.replace(cfg, **case), n) for k, n, (_, case) in zip(keys[1:], sizes, shares)]
        return types.SimpleNamespace(**{f: jnp.concatenate([getattr(p, f) for p in parts]) for f in ("tokens", "answer_mask")})

    return mixed


def with_previous_token_loss(loss_fn, weight: float, depth: int):
    """``loss_fn`` plus ``weight`` x the cross-entropy of each fact's letter, predicted at its truth
    value from ``blocks.0.hook_resid_post`` with the embedding matrix as the readout (logits
    ``resid @ W_E.T``): the signal a previous-token head there would satisfy."""
    letters, values = fact_positions(fmt.context_len(depth))

    def loss(params, tokens, answer_mask, forward, **kwargs):
        main, acc = loss_fn(params, tokens, answer_mask, forward, **kwargs)
        _, cache = forward(params, tokens[:, : values[-1] + 1], cache=("blocks.0.hook_resid_post",))
        logits = cache["blocks.0.hook_resid_post"][:, values].astype(jnp.float32) @ params["W_E"].T
        aux = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, letters]).mean()
        return main + weight * aux, acc

    return loss


def sinusoidal_init(rms):
    init_params = gpt.init_params

    def init(key, cfg):
        params = init_params(key, cfg)
        angle = np.arange(cfg.max_len)[:, None] / 10000 ** (np.arange(0, cfg.d_model, 2)[None] / cfg.d_model)
        table = np.stack([np.sin(angle), np.cos(angle)], axis=-1).reshape(cfg.max_len, -1)[:, : cfg.d_model]
        params["W_pos"] = jnp.asarray(table * rms / np.sqrt(np.mean(table**2)), jnp.float32)
        return params

    return init


def restored_params(workdir, indices, like):
    """The parameters of seeds ``indices`` of ``workdir``'s newest checkpoint, placed as ``like``."""
    step, saved, _, _ = inspection.load(workdir)
    n = jax.tree.leaves(saved.params)[0].shape[0]
    if any(not 0 <= i < n for i in indices):
        raise app.UsageError(f"--init_members {indices}: {workdir} (step {step}) holds seeds 0-{n - 1}")
    params = jax.tree.map(lambda x: np.asarray(x)[np.asarray(indices)], saved.params)
    shapes = jax.tree.map(np.shape, params), jax.tree.map(np.shape, like)
    if shapes[0] != shapes[1]:
        raise app.UsageError(f"--init_from {workdir}: its model's parameter shapes differ from --config's")
    print(f"starting from {workdir} step {step}, seeds {indices}", flush=True)
    return jax.tree.map(lambda x, y: jax.device_put(x, y.sharding), params, like)


def main(_):
    step_lib.loss_fn = functools.partial(step_lib.loss_fn, first_token_weight=F.first_token_weight, context_weight=F.context_weight)
    if F.prev_token_weight > 0:
        step_lib.loss_fn = with_previous_token_loss(step_lib.loss_fn, F.prev_token_weight, F.config.problem.depth)
    shares = [(F.hard_fraction / 2, case) for case in SECOND_OPERAND_CASES if F.hard_fraction > 0]
    shares += [(F.linear_fraction, dict(fix_query="linear"))] if F.linear_fraction > 0 else []
    if shares:
        step_lib.sample = mixed_sampler(shares)
    if F.sinusoidal_positions > 0:
        gpt.init_params = sinusoidal_init(F.sinusoidal_positions)
    cfg = config_lib.to_dict(F.config)
    config_lib.check(cfg)
    members = members_of(cfg)
    model_cfg, problem_cfg = config_lib.model_config(cfg), config_lib.problem_config(cfg)
    mesh = step_lib.make_mesh(len(members), 1)
    program = step_lib.make_train(model_cfg, problem_cfg, cfg["batch_size"], mesh)
    state = program.init(*stack_members(members))
    evaluate = evaluate_lib.make_evaluate(model_cfg, problem_cfg.context_len, mesh, batch=512)
    problems = evaluate_lib.fresh_problems(eval_key(cfg["seed"]), problem_cfg, 512)

    def report(step, params, loss=None):
        results = evaluate(params, problems)
        print(
            f"step {step} wall {time.time() - start:.0f}s loss {loss} "
            f"exact {[round(r['exact'], 3) for r in results]} first_token {[round(r['first_token'], 3) for r in results]}",
            flush=True,
        )

    start, step = time.time(), 0
    if F.init_from:
        indices = [int(i) for i in F.init_members] if F.init_members else list(range(len(members)))
        if len(indices) != len(members):
            raise app.UsageError(f"--init_members names {len(indices)} seeds; --config.num_seeds is {len(members)}")
        state = state.replace(params=restored_params(F.init_from, indices, state.params))
        report(0, state.params)
    while time.time() - start < F.max_seconds and step < cfg["num_steps"]:
        state, out = program.chunk(state, F.every)
        step += F.every
        report(step, state.params, [round(float(x), 3) for x in np.asarray(out["loss"])[:, -1]])


if __name__ == "__main__":
    define_flags()
    app.run(main)
