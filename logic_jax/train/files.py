"""A run's small JSON files (run.json, sweep.json): process 0 writes them, whole or not at all.
And the workdir's lock: one training process (per host group) at a time.

Every process of a multi-host run reads them at start, to refuse a workdir of another run,
while process 0 may be rewriting them: no reader may see half a file, and a crash mid-write
must not leave one.
"""

import contextlib
import fcntl
import json
import os

import jax

RUN_FILE = "run.json"  # a training run's config and members (trainer.py)
SWEEP_FILE = "sweep.json"  # a sweep's config (sweep.py)
LOCK_FILE = ".lock"  # held by the process 0 that trains in the workdir


def is_sweep(workdir: str) -> bool:
    """Whether ``workdir`` is a sweep's root (its runs are its groups)."""
    return os.path.isfile(os.path.join(workdir, SWEEP_FILE))


class WorkdirBusyError(ValueError):
    """Another process is training in the workdir."""


@contextlib.contextmanager
def workdir_lock(workdir: str):
    """Hold ``<workdir>/.lock`` (process 0) while training: a second run started on the same
    workdir would interleave its log lines and checkpoints with the first's. A filesystem without
    flock (some network mounts) trains unlocked."""
    if jax.process_index() != 0:
        yield
        return
    path = os.path.join(workdir, LOCK_FILE)
    f = open(path, "a")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusyError(f"workdir {workdir} is in use: another process is training in it (it holds {path})") from None
        except OSError:
            pass  # no flock here
        yield
    finally:
        f.close()  # releases the lock


def write_json(path: str, obj) -> None:
    """Write ``obj`` to ``path`` atomically, on process 0 only (the others share its filesystem)."""
    if jax.process_index() != 0:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
