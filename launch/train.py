"""Train N seeds of the small transformer under one vmap, checkpointed and resumable.

    python launch/train.py --config=configs/tiny_cpu.py --workdir=/tmp/run [--config.KEY=VALUE ...]

Writes --workdir/curves.png (loss and exact match of every seed against step) when it ends.
Restarting the same command resumes from the newest good checkpoint in --workdir. SIGTERM or
Ctrl-C stops after the compiled chunk in flight and saves a checkpoint first (exit status
128 + the signal's number; a second signal stops at once).
--multihost joins a multi-process run (one process per host; logic_jax/train/multihost.py).
"""

import os
import sys

if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # launch/ holds inspect.py: keep the standard library's first

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from logic_jax.train import cli, multihost  # noqa: E402  (multihost's flags: --multihost and where the processes meet)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "A configs/*.py file; override keys with --config.KEY=VALUE.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory of checkpoints, metrics.jsonl and TensorBoard events.")
flags.adopt_module_key_flags(multihost)  # so --help lists them
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    from logic_jax.train.preemption import StopRequest, exit_status

    # Signals are caught before JAX starts: a Ctrl-C inside its start-up or a compilation could
    # crash the process; now the run stops before its first chunk (or after the chunk in flight).
    with StopRequest() as stop:
        import jax

        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
        multihost.initialize()
        from logic_jax.train import curves, evaluate, trainer

        logging.info("devices: %s (process %d of %d)", jax.devices(), jax.process_index(), jax.process_count())
        with cli.exit_on_error():
            result = trainer.train(FLAGS.config, FLAGS.workdir, stop=stop)
    if result.evals:
        step, metrics = result.evals[-1]
        label = f"step {step}" if step == result.step else f"last evaluation (step {step}; stopped at {result.step})"
        print(f"{label}: {evaluate.summary_line(metrics)}; wall time {result.wall_time:.0f}s", flush=True)
    drawn = curves.draw_or_say_why(curves.draw_run, FLAGS.workdir)
    if drawn:
        print(f"wrote {drawn}", flush=True)
    if result.stopped_by:
        sys.exit(exit_status(result.stopped_by))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
