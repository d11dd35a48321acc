"""Inspect a training run from its checkpoint directory alone.

    python launch/inspect.py --workdir=DIR [--step=S] [--problems=FILE.jsonl|FILE.npz] [--format=text|json]
    python launch/inspect.py --workdir=DIR --attention=attn.png [--seed=0] [--tokens=ID,...] [--query=linear|logop] [--with_answer]
    python launch/inspect.py --workdir=DIR --curves=curves.png

Prints the config, step, parameter count, per-seed metrics (the step each seed first reached
100% in the trainer's evaluations among them) and a greedy-decoding evaluation
per seed (exact match, first token, per case, the oracle's error classes) on fresh held-out
problems (default: the trainer's held-out set) or on a problem file of ``launch/sample.py``: JSONL (fields ``context``
and ``answer``: token ids, the answer ending with EOS) or its ``--format=npz``. ``--format=json`` adds ``params_sha256``
per seed. ``--attention`` draws every layer and head of one seed's attention on a given or
sampled problem instead; ``--curves`` draws the training curves from the run's log (mid-run
too). Runs on the CPU; needs nothing but the checkpoint directory.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == "inspect":
    # This file shares its name with the standard library's `inspect`, and a script run from
    # launch/ has launch/ first on sys.path, so `import inspect` (pdb, dataclasses, jax, ...)
    # lands here. Load the real module in this one's place.
    import importlib.machinery
    import importlib.util

    _spec = importlib.machinery.PathFinder.find_spec("inspect", [p for p in sys.path if os.path.abspath(p or ".") != _HERE])
    _real = importlib.util.module_from_spec(_spec)
    sys.modules["inspect"] = _real
    _spec.loader.exec_module(_real)
    globals().update({k: v for k, v in vars(_real).items() if k not in ("__name__", "__file__", "__spec__", "__loader__")})

elif __name__ == "__main__":
    if sys.path and os.path.abspath(sys.path[0] or ".") == _HERE:
        sys.path.pop(0)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # inspection runs on the CPU, whatever wrote the checkpoint
    from absl import app, flags

    from logic_jax.train import inspection

    inspection.define_flags()
    flags.adopt_module_key_flags(inspection)  # so --help lists them
    app.run(inspection.main)
