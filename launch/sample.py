r"""Sample problems with the JAX sampler (the training code path) and write them out.

    python launch/sample.py --num=5 --depth=3                      # JSONL on stdout
    python launch/sample.py --num=1000000 --format=npz --out=problems.npz

Problem i is drawn from ``fold_in(key(seed), i)``: the first 100 of ``--num=1000`` are those of
``--num=100``, whatever ``--chunk``.
"""

import json
import os
import sys

if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # launch/ holds inspect.py: keep the standard library's first

from absl import app, flags  # noqa: E402

from logic_jax.problem.config import MAX_SEED, ConfigError, ProblemConfig  # noqa: E402

FLAGS = flags.DEFINE_integer("num", 10, "How many problems.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "PRNG seed; the same seed gives the same problems.", lower_bound=0, upper_bound=MAX_SEED)
flags.DEFINE_integer("depth", 3, "Chain depth d, 2 to 8.")
flags.DEFINE_float("p_logop", 0.8, "Probability that the LogOp chain is queried.")
flags.DEFINE_float("p_and", 0.5, "Probability that the LogOp rule uses AND (else OR).")
flags.DEFINE_float("p_true", 0.5, "Probability that each source fact is TRUE.")
flags.DEFINE_bool("shuffle_rules", False, "Shuffle all rules together.")
flags.DEFINE_bool("shuffle_facts", True, "Shuffle the facts (--noshuffle_facts: a_0, b_0, c_0 in that order).")
flags.DEFINE_enum("format", "jsonl", ["jsonl", "npz"], "Output format.")
flags.DEFINE_string("out", None, "Output path, written as given; JSONL goes to stdout when unset.")
flags.DEFINE_integer("chunk", 65536, "Problems per compiled call (bounds memory; the problems do not depend on it).", lower_bound=1)
F = flags.FLAGS


def main(argv):
    del argv
    try:
        cfg = ProblemConfig(depth=F.depth, p_logop=F.p_logop, p_and=F.p_and, p_true=F.p_true, shuffle_rules=F.shuffle_rules, shuffle_facts=F.shuffle_facts)
    except ConfigError as e:
        raise app.UsageError(str(e)) from e
    if F.format == "npz" and not F.out:
        raise app.UsageError("--format=npz needs --out=FILE.npz")
    if F.out and not os.path.isdir(os.path.dirname(os.path.abspath(F.out))):  # before any sampling
        raise app.UsageError(f"--out={F.out}: no such directory {os.path.dirname(os.path.abspath(F.out))}")
    if F.out and os.path.isdir(F.out):
        raise app.UsageError(f"--out={F.out} is a directory; name a file")
    try:  # opened before any sampling: an unwritable path fails at once
        out = open(F.out, "w" if F.format == "jsonl" else "wb") if F.out else sys.stdout  # a file object: np.savez adds no ".npz"
    except OSError as e:
        raise app.UsageError(f"--out={F.out}: cannot write it ({e.strerror})") from None

    import jax  # after flag parsing, so --help and usage errors are instant
    import numpy as np
    from tqdm import tqdm

    from logic_jax.problem.records import batch_arrays, iter_records
    from logic_jax.problem.sampler import sample_indexed

    key = jax.random.key(F.seed)
    chunks = [(start, min(F.chunk, F.num - start)) for start in range(0, F.num, F.chunk)]
    arrays = []
    with tqdm(total=F.num, unit="problem", disable=len(chunks) == 1, file=sys.stderr) as bar:
        for start, size in chunks:
            batch = jax.device_get(sample_indexed(key, cfg, start, size))
            if F.format == "jsonl":
                for record in iter_records(batch, cfg.context_len):
                    out.write(json.dumps(record) + "\n")
            else:
                arrays.append(batch_arrays(batch))
            bar.update(size)
    if F.format == "npz":
        merged = {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}
        np.savez_compressed(out, config=json.dumps(cfg.to_dict()), **merged)
    if out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    app.run(main)
