"""Measure the paper's claims on every seed of a checkpoint: report.md, summary.json, figures.

    python launch/analyze.py --workdir=DIR --out=DIR [--seeds=0,1] [--step=S] [--n_attention=1000 ...]
    python launch/analyze.py --workdir=SWEEP_DIR --out=DIR      # every group of a sweep, compared by grid point

The defaults are the paper's sizes (1,000 problems for attention, 5,000 + 5,000 for probes).
Runs on whatever JAX finds (a GPU if there is one); set JAX_PLATFORMS=cpu to force the CPU.
"""

import os
import sys

# launch/inspect.py is named like the standard library's `inspect`: keep this directory off
# sys.path so that `import inspect` (absl, jax, dataclasses) finds the real one.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The run's --workdir (or its checkpoints/ directory), or a sweep's.")
flags.DEFINE_string("out", None, "Output directory for report.md, summary.json and the PNGs.")
flags.DEFINE_list("seeds", None, "Seed indices to analyse (default: all in the checkpoint).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest good one).")
flags.DEFINE_integer("n_accuracy", 2048, "Held-out problems decoded for exact match (claim 1).")
flags.DEFINE_integer("n_attention", 1000, "Problems per query type for the attention analyses (claims 3, 5).")
flags.DEFINE_integer("n_routing", 1000, "Problems for the routing cosine matrix (claim 2).")
flags.DEFINE_integer("n_probe_train", 5000, "Probe training problems per query type (claim 4).")
flags.DEFINE_integer("n_probe_test", 5000, "Probe test problems per query type (claim 4).")
flags.DEFINE_integer("probe_steps", 300, "Full-batch Adam steps per probe.")
flags.DEFINE_float("probe_l2", 1e-3, "Probe L2 penalty: this times the sum of squared weights, on the mean cross-entropy (0: unpenalised).", lower_bound=0.0)
flags.DEFINE_integer("n_patch", 256, "Pairs per patching / ablation batch.")
flags.DEFINE_integer("route_layer", None, "0-indexed routing block (default: second to last, the paper's layer 2).")
flags.DEFINE_integer("read_layer", None, "0-indexed reading block (default: the last, the paper's layer 3).")
flags.DEFINE_integer("key", 0, "Seed of the analysis problems.")
flags.DEFINE_integer("chunk", 1024, "Problems per compiled forward.")
flags.DEFINE_bool("progress", True, "Progress bar.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    try:
        seeds = None if FLAGS.seeds is None else [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise app.UsageError(f"--seeds must be comma-separated integers, got {','.join(FLAGS.seeds)!r}") from None
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from logic_jax.analysis import common, pipeline, sweep
    from logic_jax.analysis.report import percent
    from logic_jax.train.checkpoint import CheckpointError
    from logic_jax.train.config import ConfigError
    from logic_jax.train.files import is_sweep

    try:
        settings = common.Settings(
            n_accuracy=FLAGS.n_accuracy, n_attention=FLAGS.n_attention, n_routing=FLAGS.n_routing,
            n_probe_train=FLAGS.n_probe_train, n_probe_test=FLAGS.n_probe_test, probe_steps=FLAGS.probe_steps, probe_l2=FLAGS.probe_l2,
            n_patch=FLAGS.n_patch, route_layer=FLAGS.route_layer, read_layer=FLAGS.read_layer, key=FLAGS.key, chunk=FLAGS.chunk,
        )
        if is_sweep(FLAGS.workdir):
            if seeds is not None:
                raise common.AnalysisError(f"{FLAGS.workdir} is a sweep: --seeds applies to one run (analyse one group, {FLAGS.workdir}/groups/g<k>, for chosen seeds)")
            summary = sweep.analyze_sweep(FLAGS.workdir, FLAGS.out, settings, FLAGS.step, FLAGS.progress)
        else:
            summary = pipeline.analyze(FLAGS.workdir, FLAGS.out, seeds, settings, FLAGS.step, FLAGS.progress)
    except (common.AnalysisError, CheckpointError, ConfigError, OSError) as e:  # OSError: an --out that cannot be written
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if "points" in summary:
        for point in summary["points"]:
            met = [f"{key} {s['met']}/{len(s['values'])}" for key, s in point["stats"].items() if s["met"] is not None]
            print(f"point {point['point']} (group {point['group']}, {point['seeds']} seed(s)): " + (", ".join(met) if point["stats"] else "not analysed"))
        print(f"wrote {FLAGS.out}/report.md, summary.csv, summary.json, claims.png and a report per group in {FLAGS.out}/g<k>/")
        return
    for table in summary["tables"]:
        for row in table["rows"]:
            if "check" in row:
                c = row["check"]
                mean = "" if row.get("mean") is None else f", mean {percent(row['mean']) if row['kind'] == 'pct' else round(row['mean'], 3)}"  # labels have none
                print(f"{table['id']}: {row['name']}: paper {row['paper']}, met by {c['met']}/{c['of']} seed(s){mean}")
    print(f"wrote {FLAGS.out}/report.md, summary.json and {len(summary['figures'])} figures")


if __name__ == "__main__":
    app.run(main)
