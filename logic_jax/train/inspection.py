"""Read a run back from its checkpoint directory alone: config, metrics, evaluation, digests.

Everything is restored onto the CPU with explicit shardings, so a checkpoint written on a
GPU (or on 8 devices) reads on a laptop.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from logic_jax.models import gpt
from logic_jax.problem import format as fmt
from logic_jax.problem.records import read_problems
from logic_jax.train import config as config_lib
from logic_jax.train import evaluate as evaluate_lib
from logic_jax.train.checkpoint import Checkpointer, CheckpointError, member_digests
from logic_jax.train.files import is_sweep
from logic_jax.train.state import Member, differing_optim, spans_points
from logic_jax.train.trainer import abstract_state, evaluate_held_out, held_out_sets


def load(workdir: str, step: int | None = None):
    """(step, state, run, metrics) of the newest good checkpoint (or ``step``), on the CPU."""
    if not os.path.exists(workdir):
        raise CheckpointError(f"no such workdir or checkpoint directory: {workdir}")
    ckpt = Checkpointer(workdir, read_only=True)
    try:
        if not ckpt.steps():
            raise CheckpointError(f"{ckpt.directory}: holds no checkpoints")
        cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
        found = ckpt.restore_latest(lambda run: abstract_state(run, cpu), step=step)
        if found is None:
            raise CheckpointError(f"{ckpt.directory}: no checkpoint could be restored (steps {ckpt.steps()})")
        return found
    finally:
        ckpt.close()


def read_problems_file(path: str, depth: int) -> evaluate_lib.Problems:
    try:
        records = read_problems(path)
    except OSError as e:  # a directory, no permission
        raise evaluate_lib.ProblemsFileError(f"{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:  # not UTF-8 (which does not name the file), not JSON lines
        raise evaluate_lib.ProblemsFileError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
    return evaluate_lib.problems_from_records(records, depth, where=path)


def inspect_run(workdir: str, step: int | None = None, problems_file: str | None = None, num_problems: int | None = None) -> dict[str, Any]:
    """A JSON-able report: config, step, parameter count, per-seed metrics and evaluation."""
    step, state, run, metrics = load(workdir, step)
    config = run["config"]
    model_cfg, problem_cfg = config_lib.model_config(config), config_lib.problem_config(config)
    members = run["members"]
    if problems_file:
        problems = read_problems_file(problems_file, problem_cfg.depth)
        source = dict(kind="file", path=os.path.abspath(problems_file), n=len(problems))
    else:
        n = config["eval_size"] if num_problems is None else num_problems
        if not 1 <= n <= evaluate_lib.MAX_PROBLEMS:
            raise ValueError(f"num_problems must be 1 to {evaluate_lib.MAX_PROBLEMS:,}, got {n:,}")
        source = dict(kind="fresh", n=n, note="the trainer's held-out evaluation problems (eval key of each member's config seed)")
    evaluate = evaluate_lib.make_evaluate(model_cfg, problem_cfg.context_len, None, batch=min(source["n"], 1024))
    if problems_file:
        results = evaluate(state.params, problems)
    else:  # as the trainer evaluates: each member on the held-out set of its config seed
        member_list = [Member.from_dict(m) for m in members]
        results = evaluate_held_out(evaluate, state.params, held_out_sets(member_list, problem_cfg, source["n"]), member_list)
    params = jax.tree.map(np.asarray, state.params)
    per_seed = []
    evals = [(e["step"], e["metrics"]) for e in metrics.get("evals", [])]
    digests = member_digests(params)
    for i, (member, result) in enumerate(zip(members, results)):
        per_seed.append(
            dict(
                seed_index=i,
                member=member,
                train_loss=metrics.get("loss", [None] * len(members))[i],
                trainer_eval=dict(step=evals[-1][0], exact=evals[-1][1][i]["exact"]) if evals else None,
                first_perfect_step=evaluate_lib.steps_to_perfect(evals, [i]),
                evaluation=result,
                params_sha256=digests[i],
            )
        )
    return dict(
        workdir=os.path.abspath(workdir),
        step=step,
        config=config,
        model=model_cfg.to_dict(),
        param_count=gpt.param_count(jax.tree.map(lambda x: x[0], params)),
        num_seeds=len(members),
        wall_time=metrics.get("wall_time"),
        problems=source,
        seeds=per_seed,
    )


def format_text(report: dict) -> str:
    # A sweep group's members are points x seeds: name each row's point, seed and own optim values.
    members = [s["member"] for s in report["seeds"]]
    swept = spans_points([Member.from_dict(m) for m in members])
    differing = differing_optim(members)
    shared = {k: v for k, v in report["config"]["optim"].items() if k not in differing}
    lines = [
        f"workdir     {report['workdir']}",
        f"step        {report['step']}",
        f"parameters  {report['param_count']:,} per seed, {report['num_seeds']} seed(s)" + (" (sweep points x seeds)" if swept else ""),
        f"model       {json.dumps({k: report['model'][k] for k in ('n_layers', 'n_heads', 'd_model', 'd_mlp')})}",
        f"problem     {json.dumps(report['config']['problem'])}",
        f"optim       {json.dumps(shared)}" + (f"; per row: {', '.join(differing)}" if differing else ""),
        f"wall time   {report['wall_time'] or 0:.0f}s",
        f"evaluated   {report['problems']['n']} problems ({report['problems']['kind']}{': ' + report['problems']['path'] if 'path' in report['problems'] else ''})",
        "",
    ]
    cases = fmt.CASE_NAMES
    by_seed = len({m["seed"] for m in members}) > 1  # a sweep over `seed`: the config seed of each row
    who = ("point  seed  " if swept else "") + ("config_seed  " if by_seed else "")
    header = ("row  " if swept else "seed ") + who + "".join(f"{k:>12}  " for k in differing) + "train_loss  100% at  exact   first   " + "  ".join(f"{c:>7}" for c in cases) + "  errors"
    lines.append(header)
    for s, m in zip(report["seeds"], members):
        e = s["evaluation"]
        loss = s["train_loss"]
        cells = "  ".join(f"{'-' if e['per_case'][c] is None else format(e['per_case'][c], '.3f'):>7}" for c in cases)
        errors = ", ".join(f"{k} {v}" for k, v in (e.get("errors") or {}).items()) or "-"
        perfect = "-" if s["first_perfect_step"] is None else s["first_perfect_step"]
        ident = (f"{m.get('point', 0):>5}  {m['index']:>4}  " if swept else "") + (f"{m['seed']:>11}  " if by_seed else "")
        optim = "".join(f"{m['optim'][k]:>12.4g}  " for k in differing)
        lines.append(f"{s['seed_index']:>3}  {ident}{optim}{'-' if loss is None else format(loss, '.4f'):>10}  {perfect:>7}  {e['exact']:.4f}  {e['first_token']:.4f}  {cells}  {errors}")
    return "\n".join(lines)


# --- Command line (launch/inspect.py) -------------------------------------------------------
def define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "The run's --workdir (or its checkpoints/ directory).")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest good one).")
    flags.DEFINE_string("problems", None, "Problem file of launch/sample.py: JSONL (context, answer) or npz; default: fresh held-out problems.")
    flags.DEFINE_integer("num_problems", None, "Fresh problems to evaluate (default: the config's eval_size).", lower_bound=1, upper_bound=evaluate_lib.MAX_PROBLEMS)
    flags.DEFINE_enum("format", "text", ["text", "json"], "Output format.")
    flags.DEFINE_string("attention", None, "Instead of evaluating: draw the attention of --seed on a problem to this PNG.")
    flags.DEFINE_string("curves", None, "Instead of evaluating: draw the run's loss and exact match against step to this PNG (mid-run too).")
    flags.DEFINE_integer("seed", 0, "Seed index for --attention.")
    flags.DEFINE_list("tokens", None, "Token ids (a context, optionally with its answer) for --attention; default: sample one.")
    flags.DEFINE_enum("query", None, ["linear", "logop"], "Queried chain of the sampled problem (--attention).")
    flags.DEFINE_bool("with_answer", False, "Append the sampled problem's proof, teacher-forced (--attention).")
    flags.mark_flag_as_required("workdir")


def main(argv) -> None:
    import sys

    from absl import app, flags, logging

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        if FLAGS.curves:
            from logic_jax.train import curves, sweep

            print(f"wrote {sweep.draw_curves(FLAGS.workdir, FLAGS.curves) if is_sweep(FLAGS.workdir) else curves.draw_run(FLAGS.workdir, FLAGS.curves)}")
            return
        if FLAGS.attention:
            from logic_jax.analysis import examples

            try:
                tokens = None if FLAGS.tokens is None else [int(t) for t in FLAGS.tokens]
            except ValueError:
                raise app.UsageError(f"--tokens must be comma-separated integer token ids, got {','.join(FLAGS.tokens)!r}") from None
            path = examples.draw_example(
                FLAGS.workdir, FLAGS.attention, seed=FLAGS.seed, tokens=tokens, query=FLAGS.query, with_answer=FLAGS.with_answer, step=FLAGS.step
            )
            print(f"wrote {path}")
            return
        report = inspect_run(FLAGS.workdir, FLAGS.step, FLAGS.problems, FLAGS.num_problems)
    except (ValueError, KeyError, OSError) as e:  # CheckpointError, ProblemsFileError, ConfigError; a PNG that cannot be written
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(report, indent=1) if FLAGS.format == "json" else format_text(report))
