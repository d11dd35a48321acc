"""Benchmark: the vmapped per-(layer, head, position) patching sweep vs a Python loop of patched runs.

The model is the paper's small GPT shape (3 layers, 3 heads, d_model 96, random weights: the
timing does not depend on training), the problems depth 3, the pairs query switches, the site
``hook_z`` per (layer, head, position) over the last ``--positions`` context positions. The baseline is ``patch_sweep_loop``: one patched run
per cell, each a call of a function compiled once per layer's site (the "hooked runs" of
TransformerLens, but compiled). Prints one JSON line: both times (first call, compilation
included, and a second, warm call), their ratio and the largest difference of the results.

    python bench/patching_sweep.py --pairs 1000 --positions 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from logic_jax.interp.pairs import context_tokens, logit_diff_metric, make_pairs
from logic_jax.interp.patching import patch_sweep_loop, patching_sweep
from logic_jax.models import gpt
from logic_jax.problem.config import ProblemConfig


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--positions", type=int, default=8, help="sweep the last N context positions (38: all at depth 3)")
    parser.add_argument("--d-model", type=int, default=96)
    parser.add_argument("--chunk-size", type=int, default=3, help="sweep cells run together (bounds memory; 0: all at once)")
    parser.add_argument("--share-upstream", choices=("auto", "on", "off"), default="auto", help="patching_sweep's share_upstream")
    parser.add_argument("--repeats", type=int, default=2, help="calls of each; the first includes compilation")
    parser.add_argument("--no-loop", action="store_true", help="time the vmapped sweep only")
    args = parser.parse_args()

    problem = ProblemConfig(depth=3)
    cfg = gpt.GPTConfig(n_layers=3, n_heads=3, d_model=args.d_model, d_mlp=4 * args.d_model)
    forward = gpt.make_forward(cfg)
    params = gpt.init_params(jax.random.PRNGKey(0), cfg)
    clean_b, cf_b = make_pairs(jax.random.PRNGKey(1), problem, args.pairs, "query")
    clean, cf, metric = context_tokens(clean_b, problem), context_tokens(cf_b, problem), logit_diff_metric(clean_b, cf_b)
    n_pos = problem.context_len if args.positions is None else args.positions
    positions = list(range(problem.context_len - n_pos, problem.context_len))
    sweep_args = (forward, params, clean, cf, metric, "hook_z", ("layer", "head", "pos"))
    kwargs = dict(layers=cfg.n_layers, positions=positions)

    vmapped_times, loop_times = [], []
    for _ in range(args.repeats):
        share = dict(auto=None, on=True, off=False)[args.share_upstream]
        swept, seconds = timed(lambda: patching_sweep(*sweep_args, chunk_size=args.chunk_size or None, share_upstream=share, **kwargs))
        vmapped_times.append(seconds)
    for _ in range(0 if args.no_loop else args.repeats):
        looped, seconds = timed(lambda: patch_sweep_loop(*sweep_args, **kwargs))
        loop_times.append(seconds)
    vmapped_warm = min(vmapped_times[1:] or vmapped_times)
    figures = dict(vmapped_first_s=round(vmapped_times[0], 3), vmapped_warm_s=round(vmapped_warm, 3))
    if loop_times:
        loop_warm = min(loop_times[1:] or loop_times)
        figures.update(
            loop_first_s=round(loop_times[0], 3),
            loop_warm_s=round(loop_warm, 3),
            speedup_first=round(loop_times[0] / vmapped_times[0], 2),
            speedup_warm=round(loop_warm / vmapped_warm, 2),
            max_abs_diff=float(np.abs(np.asarray(swept) - np.asarray(looped)).max()),
        )

    print(json.dumps(dict(
        benchmark="patching_sweep",
        command="python bench/patching_sweep.py " + " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items() if v is not None and v is not False),
        machine=f"{os.cpu_count()}-core CPU ({platform.machine()})",
        device=str(jax.devices()[0]),
        jax=jax.__version__,
        model=dict(n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_model=cfg.d_model, d_mlp=cfg.d_mlp),
        pairs=args.pairs,
        context_len=problem.context_len,
        cells=int(np.prod(swept.shape)),
        result_shape=list(swept.shape),
        chunk_size=args.chunk_size,
        share_upstream=args.share_upstream,
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        load_average_1min=round(os.getloadavg()[0], 2),  # the CPU is shared: other jobs slow both sides
        **figures,
    )))


if __name__ == "__main__":
    main()
