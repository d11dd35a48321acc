"""Inspect a training run from its checkpoint directory alone.

    python launch/inspect.py --workdir=DIR [--step=S] [--problems=FILE.jsonl] [--format=text|json]

Prints the config, step, parameter count, per-seed metrics and a greedy-decoding evaluation
per seed (exact match, first token, per case, the oracle's error classes) on fresh held-out
problems or on a JSONL file (fields ``context`` and ``answer``: token ids, answer ending with
EOS). ``--format=json`` adds ``params_sha256`` per seed. Runs on the CPU.
"""

import os
import sys

# This file is named like the standard library's `inspect`: keep its directory off sys.path
# so that `import inspect` (done by dataclasses, jax, ...) finds the real one.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import json  # noqa: E402

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The run's --workdir (or its checkpoints/ directory).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest good one).")
flags.DEFINE_string("problems", None, "JSONL file of problems (context, answer); default: fresh held-out problems.")
flags.DEFINE_integer("num_problems", None, "Fresh problems to evaluate (default: the config's eval_size).")
flags.DEFINE_enum("format", "text", ["text", "json"], "Output format.")
flags.mark_flag_as_required("workdir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from logic_jax.train import inspection

    try:
        report = inspection.inspect_run(FLAGS.workdir, FLAGS.step, FLAGS.problems, FLAGS.num_problems)
    except (ValueError, KeyError) as e:  # CheckpointError, ProblemsFileError, ConfigError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if FLAGS.format == "json":
        print(json.dumps(report, indent=1))
    else:
        print(inspection.format_text(report))


if __name__ == "__main__":
    app.run(main)
