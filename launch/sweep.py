"""A grid sweep over config fields times seeds; points of the same shapes train in one vmap.

    python launch/sweep.py --config=configs/sweep.py --workdir=DIR [--config.KEY=VALUE ...]

Writes DIR/summary.md and DIR/summary.csv (accuracy mean and min over seeds, steps to 100%,
wall time, per point) and DIR/curves.png (loss and exact match against step, a colour a point);
each group of points is a resumable run in DIR/groups/g<k>.
"""

import os
import sys

if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # launch/ holds inspect.py: keep the standard library's first

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from logic_jax.train import cli, multihost  # noqa: E402  (multihost's flags: --multihost and where the processes meet)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "A sweep config (configs/sweep.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory of the sweep: one run per group, summary tables.")
flags.adopt_module_key_flags(multihost)  # so --help lists them
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    from logic_jax.train.preemption import StopRequest, exit_status

    # Signals are caught before JAX starts (as in launch/train.py).
    with StopRequest() as stop:
        import jax

        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        multihost.initialize()
        from logic_jax.train import sweep

        with cli.exit_on_error():
            rows, stopped_by, diverged = sweep.run_sweep(FLAGS.config, FLAGS.workdir, stop=stop)
    if jax.process_index() == 0:
        print(sweep.summary_markdown(rows), flush=True)
        for message in diverged:
            print(f"error: TrainingDivergedError in {message}", file=sys.stderr)
    if stopped_by:
        sys.exit(exit_status(stopped_by))
    if diverged:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
