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
CHECKPOINT_DIR = "checkpoints"  # a run's orbax checkpoints (checkpoint.py)


def image_format(path: str) -> str | None:
    """matplotlib's ``format`` for ``path``: PNG where it has no extension (else matplotlib writes
    ``path + ".png"``, not the file named), else None (the extension's: pdf, svg, ...)."""
    return None if os.path.splitext(path)[1] else "png"


def is_sweep(workdir: str) -> bool:
    """Whether ``workdir`` is a sweep's root (its runs are its groups)."""
    return os.path.isfile(os.path.join(workdir, SWEEP_FILE))


class WorkdirBusyError(ValueError):
    """Another process is training in the workdir."""


class WorkdirKindError(ValueError):
    """A workdir of another kind: a sweep's root for a run, a run for a sweep, a run's checkpoints."""


class DamagedFileError(ValueError):
    """run.json or sweep.json that is not what the trainer wrote; the message names the file."""


def read_json(path: str, keys: tuple[str, ...] = ()) -> dict:
    """run.json or sweep.json: a dict (with ``keys``), or an error naming the file."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DamagedFileError(f"{path}: not readable JSON ({type(e).__name__}: {e}); restore it or use another workdir") from None
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        raise DamagedFileError(f"{path}: not the trainer's file (a JSON object with keys {list(keys)} expected); restore it or use another workdir")
    return obj


def check_workdir_kind(workdir: str, kind: str) -> None:
    """Refuse to train a ``kind`` ("run" or "sweep") where the other kind lives, in a folder named
    like a run's checkpoint folder, or inside one: the runs' files would mix, and a later
    checkpoint cleanup could delete one."""
    path = os.path.abspath(workdir)
    if kind == "run" and is_sweep(path):
        raise WorkdirKindError(f"workdir {workdir} is a sweep's root (it holds {SWEEP_FILE}): run launch/sweep.py on it, or train elsewhere")
    if kind == "sweep" and os.path.isfile(os.path.join(path, RUN_FILE)):
        raise WorkdirKindError(f"workdir {workdir} holds a training run ({RUN_FILE}), not a sweep: give the sweep another workdir")
    if kind == "run" and os.path.basename(path) == CHECKPOINT_DIR:
        raise WorkdirKindError(f"workdir {workdir}: '{CHECKPOINT_DIR}' is the name of a run's checkpoint folder; pass the run's directory (its parent) or another name")
    parent = os.path.dirname(path)
    while parent != os.path.dirname(parent):
        if os.path.basename(parent) == CHECKPOINT_DIR and os.path.isfile(os.path.join(os.path.dirname(parent), RUN_FILE)):
            raise WorkdirKindError(f"workdir {workdir} is inside the checkpoint folder of the run in {os.path.dirname(parent)}: train elsewhere")
        parent = os.path.dirname(parent)


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
