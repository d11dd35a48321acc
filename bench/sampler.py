r"""Problems per second: the JAX sampler against a plain per-problem Python sampler.

    python bench/sampler.py                       # both, whole processes + in-process batch sizes
    python bench/sampler.py --mode=process --impl=jax --num=2000000   # one whole process

Whole-process figures (the issue's goal: 2 million depth-3 problems, imports and compilation
included) run each implementation in a fresh ``python`` subprocess and time it from outside.
In-process figures time the compiled sampler at several batch sizes after a warm-up, on the
default JAX device (a GPU when there is one). Prints one JSON object.
"""

import os
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_enum("mode", "all", ["all", "process", "batch_sizes"], "What to measure.")
flags.DEFINE_enum("impl", "jax", ["jax", "python"], "With --mode=process: which sampler.")
flags.DEFINE_integer("num", 2_000_000, "Problems per whole-process run.")
flags.DEFINE_integer("depth", 3, "Problem depth.")
flags.DEFINE_string("batch_sizes", "1024,16384,131072,1048576", "In-process batch sizes.")
flags.DEFINE_integer("chunk", 262_144, "JAX whole-process run: problems per compiled call.")
flags.DEFINE_string("out", None, "Also write the JSON here.")
F = flags.FLAGS

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_problems(impl: str, num: int, depth: int, chunk: int) -> int:
    """Make ``num`` problems as host token arrays; returns a checksum so nothing is skipped."""
    if impl == "python":
        from bench.python_sampler import sample_arrays

        return int(sample_arrays(0, num, depth)["tokens"][:, 0].sum())
    import jax
    from logic_jax.problem.config import ProblemConfig
    from logic_jax.problem.sampler import sample

    cfg = ProblemConfig(depth=depth)
    total, key = 0, jax.random.key(0)
    for i, start in enumerate(range(0, num, chunk)):
        batch = jax.device_get(sample(jax.random.fold_in(key, i), cfg, min(chunk, num - start)))
        total += int(batch.tokens[:, 0].sum())
    return total


def whole_process(impl: str, num: int, depth: int, chunk: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--mode=process", f"--impl={impl}", f"--num={num}", f"--depth={depth}", f"--chunk={chunk}"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    return {"impl": impl, "num": num, "seconds": round(seconds, 2), "problems_per_s": round(num / seconds)}


def batch_sizes(depth: int, sizes: list[int]) -> list[dict]:
    import jax

    from logic_jax.problem.config import ProblemConfig
    from logic_jax.problem.sampler import sample

    cfg = ProblemConfig(depth=depth)
    rows = []
    for size in sizes:
        key = jax.random.key(0)
        sample(key, cfg, size).tokens.block_until_ready()  # compile
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < 2.0 or reps < 3:
            sample(jax.random.fold_in(key, reps), cfg, size).tokens.block_until_ready()
            reps += 1
        seconds = (time.perf_counter() - start) / reps
        rows.append({"batch_size": size, "ms_per_batch": round(seconds * 1e3, 3), "problems_per_s": round(size / seconds)})
    return rows


def python_in_process(depth: int, num: int = 100_000) -> dict:
    import random

    from bench.python_sampler import sample_arrays, sample_problem
    from logic_jax.problem import oracle

    rng = random.Random(1)
    for _ in range(1000):  # the baseline must make valid problems too
        context, answer, case = sample_problem(rng, depth)
        assert oracle.validate(context, answer) and case == oracle.case_of(context)
    start = time.perf_counter()
    sample_arrays(2, num, depth)
    seconds = time.perf_counter() - start
    return {"impl": "python", "num": num, "problems_per_s": round(num / seconds)}


def main(argv):
    del argv
    if F.mode == "process":
        print(make_problems(F.impl, F.num, F.depth, F.chunk))
        return
    import jax

    result = {"device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(), "jax": jax.__version__, "depth": F.depth}
    if F.mode in ("all", "batch_sizes"):
        result["python_in_process"] = python_in_process(F.depth)
        result["jax_batch_sizes"] = batch_sizes(F.depth, [int(s) for s in F.batch_sizes.split(",")])
        best = max(r["problems_per_s"] for r in result["jax_batch_sizes"])
        result["in_process_speedup"] = round(best / result["python_in_process"]["problems_per_s"], 1)
    if F.mode == "all":
        py = whole_process("python", F.num, F.depth, F.chunk)
        jx = whole_process("jax", F.num, F.depth, F.chunk)
        result["whole_process"] = {"python": py, "jax": jx, "speedup": round(py["seconds"] / jx["seconds"], 1)}
    from bench.report import emit

    emit(result, F.out)


if __name__ == "__main__":
    app.run(main)
