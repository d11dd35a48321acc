"""Run logs: a JSONL file, TensorBoard event files and a tqdm progress bar (process 0 only).

On resume from step s the JSONL records after s are dropped and TensorBoard purges its
events after s, so a restarted run's logs read like an uninterrupted run's. Every record has
``wall_s``: the run's wall time up to it, summed over restarts (work lost to a kill, after the
last checkpoint, not counted), so the wall time to reach an accuracy is read off the evals.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Sequence

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tensorboard"


def _clean(x):
    """JSON-able: numpy scalars/arrays to Python, non-finite floats kept as strings."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if np.isfinite(x) else str(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def read_jsonl(path: str) -> list[dict]:
    """The log's records. A last line cut by a kill is dropped; any other unreadable line is
    skipped with a warning, so one damaged line never costs the records after it."""
    if not os.path.exists(path):
        return []
    out, bad = [], []
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f]
    while lines and not lines[-1]:
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            out.append(record)
        elif number < len(lines):
            bad.append(number)
    if bad:
        warnings.warn(f"{path}: skipped unreadable line(s) {bad}", stacklevel=2)
    return out


class RunLog:
    def __init__(self, workdir: str, start_step: int, total_steps: int, progress: bool = True, desc: str = "train", names: Sequence[str] | None = None):
        """``names``: each member's TensorBoard tag suffix (default ``seed_<i>``)."""
        self.active = jax.process_index() == 0
        self.names = names
        self.path = os.path.join(workdir, METRICS_FILE)
        self.writer = None
        self.bar = None
        if not self.active:
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= start_step]
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        from tensorboardX import SummaryWriter

        # purge_step T hides events at steps >= T: those at the checkpoint's own step stay, and a
        # run restarted from step 0 (killed before its first checkpoint) hides all of its old ones.
        self.tb_dir = os.path.join(workdir, TB_DIR)
        self.writer = SummaryWriter(self.tb_dir, purge_step=start_step + 1)
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", desc=desc, dynamic_ncols=True, smoothing=0.1)

    def _name(self, i: int) -> str:
        return f"seed_{i}" if self.names is None else self.names[i]

    def after_compile(self) -> None:
        """Leave the time spent compiling out of the bar's rate and ETA."""
        if self.bar is not None:
            self.bar.unpause()

    def write(self, record: dict) -> None:
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(_clean(record)) + "\n")

    def train(self, step: int, loss: np.ndarray, token_acc: np.ndarray, steps: int, seconds: float, wall_s: float) -> None:
        """One compiled chunk: per-member loss and token accuracy of its last step."""
        rate = steps / max(seconds, 1e-9)
        self.write(dict(kind="train", step=step, loss=loss, token_acc=token_acc, steps_per_sec=rate, seed_steps_per_sec=rate * len(loss), wall_s=wall_s))
        if not self.active:
            return
        self.writer.add_scalar("train/loss_mean", float(np.mean(loss)), step)
        self.writer.add_scalar("train/steps_per_sec", rate, step)
        for i, v in enumerate(loss):
            self.writer.add_scalar(f"train/loss/{self._name(i)}", float(v), step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{np.mean(loss):.4f}", max=f"{np.max(loss):.4f}", refresh=False)
            self.bar.update(steps)

    def eval(self, step: int, metrics: Sequence[dict], wall_s: float) -> None:
        self.write(dict(kind="eval", step=step, wall_s=wall_s, exact=[m["exact"] for m in metrics], first_token=[m["first_token"] for m in metrics], per_case=[m["per_case"] for m in metrics], errors=[m.get("errors") for m in metrics]))
        if not self.active:
            return
        for i, m in enumerate(metrics):
            self.writer.add_scalar(f"eval/exact/{self._name(i)}", m["exact"], step)
            self.writer.add_scalar(f"eval/first_token/{self._name(i)}", m["first_token"], step)
        self.writer.add_scalar("eval/exact_min", min(m["exact"] for m in metrics), step)
        if self.bar is not None:
            self.bar.set_postfix(exact_min=f"{min(m['exact'] for m in metrics):.3f}", refresh=False)

    def message(self, text: str) -> None:
        """A line on stderr that does not break the progress bar."""
        if not self.active:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def flush(self, step: int) -> None:
        """Put every TensorBoard event so far on disk: called before the checkpoint of ``step``,
        since a run resumed from it hides (purges) later events and never writes earlier ones again.

        tensorboardX's ``flush`` leaves events queued for its writer thread; closing joins that
        thread. The next events go to a new file of the same run (suffix: the step, so names sort).
        """
        if self.writer is None:
            return
        from tensorboardX import SummaryWriter

        self.writer.close()
        self.writer = SummaryWriter(self.tb_dir, filename_suffix=f".{step:012d}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
