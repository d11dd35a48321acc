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


def _load(directory, name):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        return json.load(f)


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
        else:  # float32 matmuls may run on TF32 tensor cores: that peak is the one to meet (BF16's for bfloat16 numerics)
            by = mfu["mfu"]
            mfu_text = f"{100 * by['tf32']:.1f}% of the TF32 peak (goal 30%: {_goal(by['tf32'], 0.30)}; BF16 {100 * by['bf16']:.1f}%, FP32 {100 * by['fp32']:.1f}%)"
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
        tf32 = f", {100 * v['mfu']['tf32']:.1f}% of the TF32 peak" if v.get("mfu") else ""
        lines.append(f"  - numerics {v['name']} ({overrides}): {v['step_ms']:.1f} ms, {v['tflops']:.1f} TFLOP/s{tf32}")
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
            lines.append(
                f"- N = {row['n']}: vmapped {row['vmapped_seed_steps_per_s']:.1f} seed-steps/s, sequential "
                f"{row['sequential_seed_steps_per_s']:.1f} ({row['speedup']:.2f}x; whole runs {row['whole_run_s']['speedup']:.2f}x)"
            )
        top = max(seeds["rows"], key=lambda r: r["n"])
        if mfu and mfu.get("mfu") and mfu.get("model_flops_per_step"):
            # Model FLOPs do not depend on the numerics: train_mfu's per seed-step count holds here.
            tflops = top["vmapped_seed_steps_per_s"] * mfu["model_flops_per_step"] / mfu["seeds"] / 1e12
            tf32, bf16 = (tflops * mfu["mfu"][k] / mfu["achieved_tflops"] for k in ("tf32", "bf16"))  # mfu = achieved / peak
            lines.append(
                f"- MFU at N = {top['n']} ({top['n']} seeds vmapped, numerics of train_seeds): {tflops:.1f} TFLOP/s, "
                f"{100 * tf32:.1f}% of the TF32 peak (goal 30%: {_goal(tf32, 0.30)}), {100 * bf16:.1f}% of the BF16 peak"
            )
    torch_ref = _load(directory, "torch_reference.json")
    if torch_ref and seeds:
        top = max(seeds["rows"], key=lambda r: r["n"])
        ratio = top["vmapped_seed_steps_per_s"] / torch_ref["with_data_seed_steps_per_s"]
        lines.append(
            f"- PyTorch reference ({torch_ref['device']}, seed after seed, float32 matmul precision "
            f"{torch_ref.get('torch_matmul_precision', 'highest')!r}, bfloat16 autocast {torch_ref.get('torch_autocast_bf16', False)}): "
            f"{torch_ref['with_data_seed_steps_per_s']:.1f} seed-steps/s; "
            f"JAX at N = {top['n']} is {ratio:.1f}x (goal 10x at N = 64: {_goal(ratio, 10) if top['n'] == 64 else 'N = 64 not run'})"
        )
    records = _load(directory, "metrics.jsonl")
    if records:
        evals = [r for r in records if r["kind"] == "eval"]
        done = next((e for e in evals if min(e["exact"]) == 1.0), None)
        last = evals[-1] if evals else None
        wall = lambda e: f"{e['wall_s']:.0f} s" if "wall_s" in e else "wall time not logged"  # noqa: E731
        if done:
            lines.append(f"- train_small: every seed at 100% exact match at step {done['step']:,}, {wall(done)} of training")
        elif last:
            lines.append(
                f"- train_small: not every seed at 100% by step {last['step']:,} ({wall(last)}); "
                f"exact match min {min(last['exact']):.3f}, mean {sum(last['exact']) / len(last['exact']):.3f}"
            )
    return "\n".join(lines)


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
