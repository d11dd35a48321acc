"""The multi-seed training loop: resume, compiled chunks, NaN check, evaluation, checkpoints.

``train(config, workdir)`` trains ``config.num_seeds`` members under one vmap, sharded over
the devices of a 1-D mesh. The loop works in chunks whose ends are absolute step numbers
(multiples of ``steps_per_call``, ``checkpoint_every`` and ``eval_every``, and
``num_steps``), so a run resumed from any checkpoint runs the same compiled chunks on the
same data as an uninterrupted one: on the CPU the final parameters are bitwise equal. SIGTERM
or Ctrl-C ends the loop after the chunk in flight, with a checkpoint (``preemption.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Sequence

import jax
import numpy as np
from absl import logging

from logic_jax.train import config as config_lib
from logic_jax.train import evaluate as evaluate_lib
from logic_jax.train import preemption
from logic_jax.train.checkpoint import Checkpointer, CheckpointError, began_a_checkpoint, checkpoint_dir
from logic_jax.train.files import RUN_FILE, check_workdir_kind, read_json, workdir_lock, write_json
from logic_jax.train.metrics import RunLog
from logic_jax.train.preemption import StopRequest
from logic_jax.train.state import Member, members_of, spans_points, stack_members
from logic_jax.train.step import make_mesh, make_train, to_host

EVAL_STREAM = 0x6576616C  # "eval": the held-out problems' key, apart from every member key


class RunMismatchError(ValueError):
    """A workdir holding a run of another config; the message names the differing keys."""


class TrainingDivergedError(FloatingPointError):
    """A NaN or infinite loss; the message names the seed index and the step.

    ``step``: the training step; ``seeds``: the member indices that went non-finite there.
    """

    def __init__(self, message: str, step: int = -1, seeds: Sequence[int] = ()):
        super().__init__(message)
        self.step, self.seeds = step, list(seeds)


@dataclasses.dataclass
class TrainResult:
    state: object  # stacked TrainState
    step: int
    evals: list  # [(step, [metrics per member])]
    wall_time: float  # seconds, summed over restarts
    members: list
    stopped_by: str | None = None  # the signal that stopped the run early (SIGTERM, SIGINT), saved at `step`
    resumed_from: int | None = None  # the checkpoint step this call started from (None: a fresh start)


def run_info(config, members: Sequence[Member]) -> dict:
    return dict(config=config_lib.to_dict(config), members=[m.to_dict() for m in members])


def eval_key(seed: int) -> jax.Array:
    """The key of the held-out problems of a run with config ``seed``."""
    return jax.random.fold_in(jax.random.PRNGKey(int(seed)), EVAL_STREAM)


def held_out_sets(members: Sequence[Member], problem_cfg, n: int) -> dict[int, evaluate_lib.Problems]:
    """The held-out problems per config seed of ``members``: a sweep over ``seed`` evaluates each
    point on the set a plain run of its seed would, so the two agree."""
    return {seed: evaluate_lib.fresh_problems(eval_key(seed), problem_cfg, n) for seed in sorted({m.seed for m in members})}


def evaluate_held_out(evaluate, params, sets: dict, members: Sequence[Member]) -> list[dict]:
    """Every member's metrics on its own seed's set (one vmapped evaluation per distinct seed)."""
    out: list = [None] * len(members)
    for seed, problems in sets.items():
        for i, metrics in enumerate(evaluate(params, problems)):
            if members[i].seed == seed:
                out[i] = metrics
    return out


def abstract_state(run: dict, sharding=None):
    """Shapes (and shardings) of the stacked state of a run item (config and members)."""
    from logic_jax.train.state import init_state

    config = run["config"]
    members = [Member.from_dict(m) for m in run["members"]]
    model_cfg = config_lib.model_config(config)
    keys, hparams = stack_members(members)
    shapes = jax.eval_shape(jax.vmap(lambda k, h: init_state(k, h, model_cfg)), keys, hparams)
    if sharding is None:
        return shapes
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def check_workdir(workdir: str, info: dict) -> str | None:
    """Error naming the keys if ``workdir`` holds a run of another config or member list.

    A run that never saved a checkpoint (it failed or was stopped during start-up or its first
    chunks) holds nothing to resume: its config is replaced, and the returned note says so.
    """
    path = os.path.join(workdir, RUN_FILE)
    if not os.path.exists(path):
        return None
    saved = read_json(path, ("config", "members"))
    diffs = config_lib.differences(saved["config"], info["config"])
    if saved["members"] != info["members"]:
        diffs.append(f"members: {saved['members']} -> {info['members']}")
    if not diffs:
        return None
    if not began_a_checkpoint(workdir):
        return f"{workdir} held a run that saved no checkpoint; starting over with this config ({'; '.join(diffs)})"
    raise RunMismatchError(f"workdir {workdir} holds a run of another config or members; differing keys: {'; '.join(diffs)}")


def chunk_end(step: int, config) -> int:
    """The next absolute step at which the loop stops to log, evaluate or save."""
    ends = [step - step % config["steps_per_call"] + config["steps_per_call"], step - step % config["checkpoint_every"] + config["checkpoint_every"], config["num_steps"]]
    if config["eval_every"]:
        ends.append(step - step % config["eval_every"] + config["eval_every"])
    return min(ends)


def check_finite(out: dict, start: int, members: Sequence[Member], last_saved: int | None) -> None:
    """Raise naming the seed and the step if a chunk's losses or final parameters are not finite."""
    losses = out["loss"]
    bad = ~np.isfinite(losses)
    params_bad = ~np.asarray(out["params_finite"], bool)
    if not bad.any() and not params_bad.any():
        return

    def where(seed: int) -> str:
        m = members[seed]
        return f"seed index {seed}" + (f" (sweep point {m.point}, seed {m.index})" if spans_points(members) else "")

    kept = f"the last good checkpoint is step {last_saved}" if last_saved is not None else "no checkpoint was saved"
    if bad.any():
        first_step = int(np.argmax(bad.any(axis=0)))
        seed = int(np.argmax(bad[:, first_step]))
        seeds = [int(i) for i in np.flatnonzero(bad[:, first_step])]
        raise TrainingDivergedError(
            f"non-finite loss {losses[seed, first_step]} at training step {start + first_step} for {where(seed)} "
            f"(seed indices with a non-finite loss there: {seeds}); stopping, {kept}",
            start + first_step, seeds,
        )
    seeds = [int(i) for i in np.flatnonzero(params_bad)]
    raise TrainingDivergedError(
        f"non-finite parameters after training step {start + losses.shape[1] - 1} for {where(seeds[0])} "
        f"(seed indices with non-finite parameters: {seeds}); stopping, {kept}",
        start + losses.shape[1] - 1, seeds,
    )


def train(config, workdir: str, *, members: Sequence[Member] | None = None, desc: str = "train", stop: StopRequest | None = None) -> TrainResult:
    """Train (or resume) the run in ``workdir`` to ``config.num_steps``.

    ``stop``: a ``StopRequest`` already entered by the caller (a sweep, whose groups share one,
    so that a signal caught in one group's last chunk still stops the sweep); default: this
    call's own.
    """
    config_lib.check(config)
    config = config_lib.to_dict(config)
    members = list(members) if members is not None else members_of(config)
    info = run_info(config, members)
    checkpoint_dir(workdir)  # refuses a URL before anything is written
    check_workdir_kind(workdir, "run")
    os.makedirs(workdir, exist_ok=True)
    # Signals are caught from here on: a Ctrl-C during restore, initialisation or compilation
    # used to raise inside JAX (a traceback, a segfault, or an exception swallowed by a callback).
    with workdir_lock(workdir), preemption.caught(stop) as stop:
        return _train_locked(config, workdir, members, info, desc, stop)


def _train_locked(config: dict, workdir: str, members: list, info: dict, desc: str, stop: StopRequest) -> TrainResult:
    """``train`` past its argument checks, with the workdir locked and signals caught."""
    replaced = check_workdir(workdir, info)

    model_cfg, problem_cfg = config_lib.model_config(config), config_lib.problem_config(config)
    mesh = make_mesh(len(members), config["num_devices"])
    program = make_train(model_cfg, problem_cfg, config["batch_size"], mesh)
    ckpt = Checkpointer(workdir, config["keep_checkpoints"])

    changed = []  # run-length keys this restart changes, told to the user

    def abstract_for(run):
        diffs = config_lib.differences(run["config"], config)
        if diffs or run["members"] != info["members"]:
            raise RunMismatchError(f"checkpoints in {ckpt.directory} belong to another run; differing keys: {'; '.join(diffs) or 'members'}")
        changed[:] = config_lib.run_length_changes(run["config"], config)
        return abstract_state(run, program.sharding)

    restored = ckpt.restore_latest(abstract_for)
    write_json(os.path.join(workdir, RUN_FILE), info)
    if restored is None:
        step, metrics = 0, {"evals": [], "wall_time": 0.0}
        keys, hparams = stack_members(members)
        state = program.init(keys, hparams)
    else:
        step, state, _, metrics = restored
        logging.info("resumed %s from step %d", workdir, step)
    last_saved = step if restored is not None else None
    evals = [(e["step"], e["metrics"]) for e in metrics.get("evals", [])]
    wall_before, t_start = float(metrics.get("wall_time", 0.0)), time.time()
    wall_saved = wall_before  # the wall time in the newest checkpoint: what a rerun that trains nothing reports

    def wall_time():  # of the run so far, summed over restarts
        return wall_before + time.time() - t_start

    evaluate = evaluate_lib.make_evaluate(model_cfg, problem_cfg.context_len, mesh, batch=min(config["eval_size"], 1024))
    held_out = held_out_sets(members, problem_cfg, config["eval_size"])
    names = [f"point_{m.point}/seed_{m.index}" for m in members] if spans_points(members) else None
    log = RunLog(workdir, step, config["num_steps"], progress=config["progress"], desc=desc, names=names)
    if replaced:
        log.message(replaced)
    if restored is not None:
        log.message(f"resuming {workdir} from step {step}" + (f" ({'; '.join(changed)})" if changed else ""))
    compiled = {}  # chunk length -> the compiled chunk
    first_step = step
    try:
        while step < config["num_steps"]:
            n = chunk_end(step, config) - step
            if n not in compiled:  # compiled ahead, so that the logged rate is the training's alone
                t0 = time.time()
                compiled[n] = program.chunk.lower(state, n).compile()
                log.message(f"compiled the training chunk of {n} steps in {time.time() - t0:.1f}s")
                log.after_compile()
                # A signal during start-up: nothing has trained since the restored (or no) checkpoint.
                if step == first_step and stop.requested():
                    log.message(f"{stop.name}: stopped at step {step} before training; rerun the same command to resume")
                    break
            t0 = time.time()
            state, out = compiled[n](state)
            out = to_host(out)  # waits for the chunk
            check_finite(out, step, members, last_saved)
            step += n
            log.train(step, out["loss"][:, -1], out["token_acc"][:, -1], n, time.time() - t0, wall_time())
            if (config["eval_every"] and step % config["eval_every"] == 0) or step == config["num_steps"]:
                result = evaluate_held_out(evaluate, state.params, held_out, members)
                evals.append((step, result))
                log.eval(step, result, wall_time())
            stopping = stop.requested()
            if stopping or step % config["checkpoint_every"] == 0 or step == config["num_steps"]:
                saved = dict(
                    step=step,
                    loss=out["loss"][:, -1].tolist(),
                    evals=[dict(step=s, metrics=m) for s, m in evals],
                    wall_time=wall_time(),
                )
                log.flush(step)
                ckpt.save(step, state, info, json.loads(json.dumps(saved, default=float)))
                last_saved, wall_saved = step, saved["wall_time"]
            if stopping and step < config["num_steps"]:
                log.message(f"{stop.name}: stopped at step {step} and saved a checkpoint; rerun the same command to resume")
                break
    finally:
        # A pending async save of a good state is completed before any error propagates.
        ckpt.wait()
        ckpt.close()
        log.close()
    resumed_from = None if restored is None else restored[0]
    # A signal during the last chunk stops nothing: the run is complete (exit 0, not "rerun").
    stopped_by = stop.name if step < config["num_steps"] else None
    return TrainResult(state=state, step=step, evals=evals, wall_time=wall_saved if last_saved == step else wall_time(), members=members, stopped_by=stopped_by, resumed_from=resumed_from)


def latest_metrics(workdir: str) -> dict:
    """The metrics item of the newest checkpoint (for sweep summaries)."""
    ckpt = Checkpointer(workdir, read_only=True)
    steps = ckpt.steps()
    if not steps:
        raise CheckpointError(f"no checkpoints in {ckpt.directory}")
    import orbax.checkpoint as ocp

    return ckpt.manager.restore(steps[-1], args=ocp.args.Composite(metrics=ocp.args.JsonRestore()))["metrics"]
