"""Joining a multi-process run: the ``--multihost`` flags of launch/train.py and launch/sweep.py.

Run the same command once per host (or per GPU), each with ``--multihost``. On Slurm, Open MPI,
Kubernetes and Cloud TPU, ``jax.distributed.initialize`` finds the other processes by itself;
elsewhere name the coordinator (process 0's host and a free port), the process count and this
process's index:

    python launch/train.py --config=configs/small.py --workdir=DIR --multihost \\
        --coordinator_address=host0:8476 --num_processes=2 --process_id=0   # 1 on the other host

The seed axis is then sharded over the devices of every process; the workdir must be one
directory that every process sees (a path on a shared filesystem). On CPUs the processes talk
over gloo, so one machine can rehearse a multi-host run (tests/test_multihost.py does).
"""

import sys

from absl import app, flags

MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first: one process per host.")
COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "With --multihost: host:port of process 0 (default: detected, or $JAX_COORDINATOR_ADDRESS)."
)
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --multihost: the number of processes (default: detected).", lower_bound=1)
PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --multihost: this process's index, 0 to num_processes - 1 (default: detected).", lower_bound=0)


def initialize() -> None:
    """Call ``jax.distributed.initialize`` if ``--multihost``; before anything else touches JAX's devices."""
    given = [f"--{f.name}" for f in (COORDINATOR_ADDRESS, NUM_PROCESSES, PROCESS_ID) if f.present]
    if not MULTIHOST.value:
        if given:
            raise app.UsageError(f"{', '.join(given)} only apply with --multihost")
        return
    if NUM_PROCESSES.value is not None and PROCESS_ID.value is not None and PROCESS_ID.value >= NUM_PROCESSES.value:
        raise app.UsageError(f"--process_id={PROCESS_ID.value} must be below --num_processes={NUM_PROCESSES.value}")
    address = COORDINATOR_ADDRESS.value
    if address is not None and not address.rpartition(":")[2].isdigit():
        raise app.UsageError(f"--coordinator_address={address}: must be host:port (process 0's host and a free port)")
    import jax

    # Signals are the trainer's (preemption.StopRequest): JAX's preemption service would catch
    # SIGTERM first, and orbax's saves share its sync-point counter, so the hosts never agree.
    jax.config.update("jax_enable_preemption_service", False)
    # initialize blocks until every process has joined: say so, or a missing peer looks like a hang.
    who = "every process" if NUM_PROCESSES.value is None else f"all {NUM_PROCESSES.value} processes"
    where = f" at {address}" if address else ""
    me = "" if PROCESS_ID.value is None else f" (this is process {PROCESS_ID.value})"
    print(f"--multihost: waiting for {who} to join{where}{me}", file=sys.stderr, flush=True)
    try:
        jax.distributed.initialize(coordinator_address=address, num_processes=NUM_PROCESSES.value, process_id=PROCESS_ID.value)
    except (ValueError, RuntimeError) as e:  # no cluster detected, or the coordinator not reached
        raise app.UsageError(
            f"--multihost: jax.distributed.initialize failed ({type(e).__name__}: {e}); where no cluster manager "
            "(Slurm, Open MPI, Kubernetes, Cloud TPU) is detected, pass --coordinator_address=host:port --num_processes=N --process_id=I"
        ) from None
