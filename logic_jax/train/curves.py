"""Training curves from a run's metrics.jsonl: loss and exact match of every seed, one PNG.

launch/train.py writes ``<workdir>/curves.png`` when a run ends, launch/sweep.py writes one for
the whole sweep (a colour a grid point), and ``launch/inspect.py --curves=FILE.png`` draws one
at any time, mid-run too. Matplotlib's object API: no pyplot state, any backend.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Sequence

import jax
import numpy as np

from logic_jax.train.checkpoint import checkpoint_dir
from logic_jax.train.files import RUN_FILE, DamagedFileError, image_format, read_json
from logic_jax.train.metrics import METRICS_FILE, read_jsonl

CURVES_FILE = "curves.png"


class CurvesError(ValueError):
    """A workdir whose log cannot be drawn; the message names the file."""


class NoStepYet(CurvesError):
    """A run whose log has no training record yet (compiling, or diverged in its first chunk)."""


@dataclasses.dataclass(frozen=True)
class Curves:
    """One run's log as arrays; member m belongs to grid point ``points[m]``."""

    train_step: np.ndarray  # [T]
    loss: np.ndarray  # [T, members]; NaN where the log says "nan"
    eval_step: np.ndarray  # [E]
    exact: np.ndarray  # [E, members]
    points: tuple[int, ...]


def _floats(rows: list[dict], key: str, members: int, where: str) -> np.ndarray:
    out = np.full((len(rows), members), np.nan)
    for i, r in enumerate(rows):
        values = r.get(key)
        try:
            if not isinstance(values, list) or len(values) != members:
                raise ValueError
            out[i] = [float(v) for v in values]  # float("nan"), float("inf") read the strings the log writes
        except (TypeError, ValueError):
            raise CurvesError(f"{where}: step {r.get('step')}: '{key}' should be a list of {members} numbers, got {values!r}") from None
    return out


def read_run(workdir: str) -> Curves:
    """The curves of a training run's workdir (its metrics.jsonl and run.json), or of its checkpoints/."""
    workdir = os.path.dirname(checkpoint_dir(workdir))
    log, run_file = os.path.join(workdir, METRICS_FILE), os.path.join(workdir, RUN_FILE)
    for path in (log, run_file):
        if not os.path.exists(path):
            raise CurvesError(f"no {os.path.basename(path)} in {workdir}: not a training workdir, or no chunk has finished yet")
    try:
        members = read_json(run_file, ("members",))["members"]
    except DamagedFileError as e:
        raise CurvesError(str(e)) from None
    records = read_jsonl(log)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train:
        raise NoStepYet(f"{log}: no training records yet")
    n = len(members)
    return Curves(
        train_step=np.array([r["step"] for r in train]),
        loss=_floats(train, "loss", n, log),
        eval_step=np.array([r["step"] for r in evals], dtype=int),
        exact=_floats(evals, "exact", n, log).reshape(len(evals), n),
        points=tuple(int(m.get("point", 0)) for m in members),
    )


def figure(runs: Sequence[Curves], point_labels: dict[int, str] | None = None, title: str = ""):
    """Loss (log scale) and exact match against step, a line a member. The colours are grid
    points, or seed indices (as in ``inspect``) when every member is of one point."""
    import matplotlib
    from matplotlib.figure import Figure

    by_seed = len({p for c in runs for p in c.points}) == 1
    key_of = lambda c, m: m if by_seed else c.points[m]  # noqa: E731
    keys = sorted({key_of(c, m) for c in runs for m in range(len(c.points))})
    if len(keys) <= 10:
        colour = {k: matplotlib.colormaps["tab10"](i) for i, k in enumerate(keys)}
    else:
        colour = {k: matplotlib.colormaps["viridis"](i / (len(keys) - 1)) for i, k in enumerate(keys)}
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_loss, ax_exact = fig.subplots(1, 2)
    labelled = set()
    for c in runs:
        for m in range(len(c.points)):
            k = key_of(c, m)
            label = None
            if k not in labelled and len(keys) <= 16:
                label = f"seed {k}" if by_seed else (point_labels or {}).get(k, f"point {k}")
                labelled.add(k)
            one = len(c.train_step) == 1  # a lone point needs a marker to be seen
            ax_loss.plot(c.train_step, c.loss[:, m], color=colour[k], lw=1, alpha=0.8, label=label, marker="." if one else None, ms=3)
            if len(c.eval_step):
                ax_exact.plot(c.eval_step, 100 * c.exact[:, m], color=colour[k], lw=1, alpha=0.8, marker=".", ms=3)
    ax_loss.set(xlabel="step", ylabel="train loss (answer tokens)", yscale="log", title="loss")
    ax_exact.set(xlabel="step", ylabel="exact match (%)", ylim=(-2, 102), title="held-out exact match (greedy)")
    ax_exact.axhline(100, color="grey", lw=0.5, ls="--")
    if labelled:
        fig.legend(loc="outside right upper", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def draw(runs: Sequence[Curves], path: str, point_labels: dict[int, str] | None = None, title: str = "") -> str:
    """``figure`` saved to ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure(runs, point_labels, title).savefig(path, dpi=90, format=image_format(path))
    return path


def draw_run(workdir: str, path: str | None = None) -> str:
    """``<workdir>/curves.png`` (or ``path``) from a run's log."""
    return draw([read_run(workdir)], path or os.path.join(workdir, CURVES_FILE), title=os.path.basename(os.path.abspath(workdir)))


def draw_sweep(group_dirs: Sequence[str], path: str, point_labels: dict[int, str]) -> str:
    """A sweep's curves: every group that has logged a step, a colour a grid point."""
    runs = []
    for d in group_dirs:
        if os.path.exists(os.path.join(d, METRICS_FILE)):
            try:
                runs.append(read_run(d))
            except NoStepYet:  # compiling, or diverged in its first chunk: the other groups still draw
                pass
    if not runs:
        raise CurvesError(f"no group of the sweep has logged a step yet ({', '.join(group_dirs)})")
    sweep_root = os.path.dirname(os.path.dirname(os.path.abspath(group_dirs[0])))  # <sweep>/groups/g0
    return draw(runs, path, point_labels, title=os.path.basename(sweep_root))


def draw_or_say_why(draw_fn, *args) -> str | None:
    """``draw_fn(*args)`` on process 0 (the others share its filesystem), at the end of a run or
    sweep. A log with no step yet, or a machine without matplotlib, is a line on stderr, not an
    error: the run itself is complete, and ``inspect --curves`` draws it elsewhere."""
    if jax.process_index() != 0:
        return None
    try:
        return draw_fn(*args)
    except (CurvesError, ImportError) as e:
        print(f"no curves.png: {e}; `python launch/inspect.py --workdir=... --curves=FILE.png` draws it elsewhere", file=sys.stderr)
        return None
