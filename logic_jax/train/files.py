"""A run's small JSON files (run.json, sweep.json): process 0 writes them, whole or not at all.

Every process of a multi-host run reads them at start, to refuse a workdir of another run,
while process 0 may be rewriting them: no reader may see half a file, and a crash mid-write
must not leave one.
"""

import json
import os

import jax

RUN_FILE = "run.json"  # a training run's config and members (trainer.py)
SWEEP_FILE = "sweep.json"  # a sweep's config (sweep.py)


def write_json(path: str, obj) -> None:
    """Write ``obj`` to ``path`` atomically, on process 0 only (the others share its filesystem)."""
    if jax.process_index() != 0:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
