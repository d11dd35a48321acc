r"""The figures of a bench/gpu_check.sh archive against the issues' goals, as Markdown.

    tar xzf gpu_check.tgz && python bench/gpu_summary.py gpu_check
    python bench/gpu_summary.py --best_flags train_mfu.json   # the fastest numerics, as flags

Reads whatever parts ran (status.txt, sampler.json, train_mfu.json, profile.json,
train_seeds.json, torch_reference.json, metrics.jsonl of train_small) and prints one line per
goal, so that a GPU session's numbers go into BENCHMARKS.md without hand arithmetic.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.report import F32_MATMULS, bf16_numerics  # noqa: E402


def _load(directory, name):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        return json.load(f)


def peak_kind(model: dict, overrides: dict | None = None) -> str:
    """The peak the numerics can reach, the one MFU is judged against: BF16's for bfloat16
    activations or matmuls, FP32's where TF32 is forbidden, else TF32's (float32 matmuls may run on
    TF32 cores)."""
    m = dict(model, **{k.split(".", 1)[1]: v for k, v in (overrides or {}).items()})
    if bf16_numerics(m):
        return "bf16"
    return "fp32" if m.get("matmul_precision", "default") in F32_MATMULS else "tf32"


def _mfu(by: dict, kind: str) -> str:
    return f"{100 * by[kind]:.1f}% of the {kind.upper()} peak (goal 30%: {_goal(by[kind], 0.30)})"


def _goal(value, goal, higher=True):
    met = value >= goal if higher else value < goal
    return "met" if met else "not met"


def summary(directory: str) -> str:
    lines = []
    status = os.path.join(directory, "status.txt")
    if os.path.exists(status):
        lines += ["Parts: " + "; ".join(open(status).read().split("\n")).strip("; "), ""]
    sampler = _load(directory, "sampler.json")
    if sampler:
        best = max(sampler["jax_batch_sizes"], key=lambda r: r["problems_per_s"])
        lines.append(
            f"- sampler ({sampler['device']}): {best['problems_per_s']:,.0f} problems/s at batch {best['batch_size']:,} "
            f"(goal 1e8 on an H100: {_goal(best['problems_per_s'], 1e8)}); {sampler['in_process_speedup']}x the Python sampler in process"
        )
    mfu = _load(directory, "train_mfu.json")
    if mfu:
        if mfu["mfu"] is None:
            mfu_text = "no peak known for this device"
        else:
            by = mfu["mfu"]
            mfu_text = f"{_mfu(by, peak_kind(mfu.get('model', {})))}; TF32 {100 * by['tf32']:.1f}%, BF16 {100 * by['bf16']:.1f}%, FP32 {100 * by['fp32']:.1f}%"
        lines.append(
            f"- training step ({mfu['device']}, {mfu['seeds']} seeds x batch {mfu['batch_size']}): {mfu['step_ms']:.1f} ms, "
            f"{mfu['achieved_tflops']:.1f} TFLOP/s, MFU {mfu_text}; sampling {100 * mfu['sampling_share']:.2f}% of the step "
            f"(goal under 5%: {_goal(mfu['sampling_share'], 0.05, higher=False)})"
        )
    for v in (mfu or {}).get("variants", []):
        overrides = ", ".join(f"{k}={x}" for k, x in v["overrides"].items()) or "as configured"
        if "error" in v:
            lines.append(f"  - numerics {v['name']} ({overrides}): failed, {v['error'][:120]}")
            continue
        peak = f", {_mfu(v['mfu'], peak_kind(mfu.get('model', {}), v['overrides']))}" if v.get("mfu") else ""
        lines.append(f"  - numerics {v['name']} ({overrides}): {v['step_ms']:.1f} ms, {v['tflops']:.1f} TFLOP/s{peak}")
    profile = _load(directory, "profile.json")
    if profile:
        shares = ", ".join(f"{k} {100 * c['share']:.0f}%" for k, c in sorted(profile["categories"].items(), key=lambda kv: -kv[1]["share"]) if c["share"] > 0.005)
        names = "; ".join(f"{t['name'][:60]} {t['ms_per_step']:.2f} ms" for t in profile["top_by_base_name"][:5])
        lines.append(
            f"- profile ({profile['reported']}): {profile['reported_ms_per_step']:.1f} ms a step of {profile['step_ms']:.1f} ms wall; {shares}; top: {names}"
        )
    seeds = _load(directory, "train_seeds.json")
    if seeds:
        for row in seeds["rows"]:
            if "error" in row:
                lines.append(f"- N = {row['n']}: {row['error']}")
                continue
            remat = f" with model.remat={row['remat']}" if row.get("remat", "none") != "none" else ""
            lines.append(
                f"- N = {row['n']}: vmapped{remat} {row['vmapped_seed_steps_per_s']:.1f} seed-steps/s, sequential "
                f"{row['sequential_seed_steps_per_s']:.1f} ({row['speedup']:.2f}x; whole runs {row['whole_run_s']['speedup']:.2f}x "
                f"against separate processes" + (f", {row['whole_run_s']['speedup_one_process']:.2f}x against one process)" if "speedup_one_process" in row["whole_run_s"] else ")")
            )
        seeds = dict(seeds, rows=[r for r in seeds["rows"] if "error" not in r])  # what ran, below
    if seeds and seeds["rows"]:
        top = max(seeds["rows"], key=lambda r: r["n"])
        if mfu and mfu.get("mfu") and mfu.get("model_flops_per_step"):
            # Model FLOPs do not depend on the numerics: train_mfu's per seed-step count holds here.
            tflops = top["vmapped_seed_steps_per_s"] * mfu["model_flops_per_step"] / mfu["seeds"] / 1e12
            by = {k: tflops * mfu["mfu"][k] / mfu["achieved_tflops"] for k in ("tf32", "bf16")}  # mfu = achieved / peak
            kind = peak_kind(seeds.get("model", mfu.get("model", {})))
            lines.append(
                f"- MFU at N = {top['n']} ({top['n']} seeds vmapped, numerics of train_seeds: {kind}): {tflops:.1f} TFLOP/s, "
                f"{_mfu(by, kind)}; TF32 {100 * by['tf32']:.1f}%, BF16 {100 * by['bf16']:.1f}%"
            )
    torch_ref = _load(directory, "torch_reference.json")
    if torch_ref and seeds and seeds["rows"]:
        top = max(seeds["rows"], key=lambda r: r["n"])
        ratio = top["vmapped_seed_steps_per_s"] / torch_ref["with_data_seed_steps_per_s"]
        lines.append(
            f"- PyTorch reference ({torch_ref['device']}, seed after seed, float32 matmul precision "
            f"{torch_ref.get('torch_matmul_precision', 'highest')!r}, bfloat16 autocast {torch_ref.get('torch_autocast_bf16', False)}): "
            f"{torch_ref['with_data_seed_steps_per_s']:.1f} seed-steps/s with its host data pipeline; "
            f"JAX at N = {top['n']} is {ratio:.1f}x (goal 10x at N = 64: {_goal(ratio, 10) if top['n'] == 64 else 'N = 64 not run'})"
            + (f"; against its model alone (pre-drawn batches, {torch_ref['model_only_seed_steps_per_s']:.1f} seed-steps/s): "
               f"{top['vmapped_seed_steps_per_s'] / torch_ref['model_only_seed_steps_per_s']:.1f}x" if torch_ref.get("model_only_seed_steps_per_s") else "")
        )
    records = _load(directory, "metrics.jsonl")
    if records:
        evals = [r for r in records if r["kind"] == "eval"]
        done = next((e for e in evals if min(e["exact"]) == 1.0), None)
        last = evals[-1] if evals else None
        wall = lambda e: f"{e['wall_s']:.0f} s" if "wall_s" in e else "wall time not logged"  # noqa: E731
        run = _load(directory, "run.json")
        n_run = len(run["members"]) if run else None
        if done:
            lines.append(f"- train_small{f' ({n_run} seeds)' if n_run else ''}: every seed at 100% exact match at step {done['step']:,}, {wall(done)} of training")
            projected = project_to_64(done.get("wall_s"), n_run, seeds)
            if projected:
                lines.append(f"  - 64 seeds, projected: {projected}")
        elif last:
            lines.append(
                f"- train_small: not every seed at 100% by step {last['step']:,} ({wall(last)}); "
                f"exact match min {min(last['exact']):.3f}, mean {sum(last['exact']) / len(last['exact']):.3f}"
            )
        trained = [r for r in records if r["kind"] == "train"]
        if trained and (last is None or trained[-1]["step"] > last["step"]):  # trained on past the last evaluation
            t = trained[-1]
            acc = t["token_acc"]
            lines.append(
                f"- train_small: last logged step {t['step']:,} ({wall(t)}; {t['seed_steps_per_sec']:.0f} seed-steps/s), token accuracy "
                f"min {min(acc):.3f}, mean {sum(acc) / len(acc):.3f}" + ("" if evals else "; no evaluation yet, so 100% not reached")
            )
    return "\n".join(lines)


def project_to_64(wall_s, n: int | None, seeds: dict | None) -> str | None:
    """The wall time 64 seeds would take to the same step: ``wall_s`` of an ``n``-seed run times
    the ratio of the step times (train_seeds' seed-steps/s at n and at 64); evaluations ignored."""
    if wall_s is None or not n or n == 64 or not seeds:
        return None
    rate = {row["n"]: row["vmapped_seed_steps_per_s"] for row in seeds["rows"]}
    if n not in rate or 64 not in rate:
        return None
    factor = (64 / n) * (rate[n] / rate[64])
    return f"~{wall_s * factor:,.0f} s ({wall_s:.0f} s x {factor:.2f}: 64/{n} seeds at {rate[64]:.0f} vs {rate[n]:.0f} seed-steps/s; evaluations not counted)"


def best_flags(mfu_path: str) -> str:
    """The ``--config.*`` flags of train_mfu's fastest numerics ('' if the config's own are)."""
    with open(mfu_path) as f:
        variants = json.load(f).get("variants") or [dict(overrides={}, step_ms=0.0)]
    best = min((v for v in variants if "step_ms" in v), key=lambda v: v["step_ms"])
    return " ".join(f"--config.{k}={v}" for k, v in best["overrides"].items())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--best_flags":
        print(best_flags(sys.argv[2]))
    elif len(sys.argv) == 2 and os.path.isdir(sys.argv[1]):
        print(summary(sys.argv[1]))
    else:
        sys.exit("usage: python bench/gpu_summary.py DIR (the extracted gpu_check folder) | --best_flags train_mfu.json")
