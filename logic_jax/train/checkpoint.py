"""Checkpoints of a run: the stacked ``TrainState`` of all members, the run's config and metrics.

Layout: ``<workdir>/checkpoints/<step>/{state,run,metrics}`` (an orbax ``CheckpointManager``;
saves are asynchronous and committed by an atomic rename, so a run killed mid-save leaves
only a temporary directory that is ignored). ``run`` holds the config and the member list,
enough to rebuild the state's shapes: a checkpoint directory needs nothing else to be read.

``metrics`` carries a sha256 digest of the state; a restore that raises, or whose digest
differs, is a corrupted checkpoint: warn and fall back to the previous step.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging as std_logging
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization

from logic_jax.train.files import CHECKPOINT_DIR, is_sweep

FORMAT = "logic_jax.train/1"
CORRUPT_DIR = "corrupt_checkpoints"


class CheckpointError(ValueError):
    """A missing, foreign or unreadable checkpoint directory; the message names it."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint of ours that cannot be read back (torn by a kill, damaged on disk)."""


def checkpoint_dir(workdir: str) -> str:
    """``<workdir>/checkpoints``; a path that already is a checkpoint directory is kept."""
    if "://" in str(workdir):
        raise CheckpointError(f"workdir {workdir}: URLs are not supported; use a path (on a shared filesystem for several hosts)")
    workdir = os.path.abspath(workdir)
    if os.path.basename(workdir.rstrip("/")) == CHECKPOINT_DIR:
        return workdir
    return os.path.join(workdir, CHECKPOINT_DIR)


def began_a_checkpoint(workdir: str) -> bool:
    """Whether the run in ``workdir`` ever began a checkpoint: a step folder in its checkpoint
    directory, half-written (``<step>.orbax-checkpoint-tmp-...``) or set aside as corrupt."""
    folders = [checkpoint_dir(workdir), os.path.join(workdir, CORRUPT_DIR)]
    return any(os.path.isdir(d) and any(name.split(".")[0].isdigit() for name in os.listdir(d)) for d in folders)


def _leaves(tree) -> list[tuple[str, np.ndarray]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return sorted((jax.tree_util.keystr(path), np.asarray(jax.device_get(x))) for path, x in flat)


def digest(tree) -> str | None:
    """sha256 of every leaf's path, dtype, shape and bytes (None if not addressable here)."""
    if not all(getattr(x, "is_fully_addressable", True) for x in jax.tree.leaves(tree)):
        return None
    h = hashlib.sha256()
    for path, x in _leaves(tree):
        h.update(f"{path}:{x.dtype}:{x.shape};".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def member_digests(params) -> list[str]:
    """``params_sha256`` of each member of stacked parameters."""
    n = jax.tree.leaves(params)[0].shape[0]
    return [digest(jax.tree.map(lambda x: np.asarray(x)[i], params)) for i in range(n)]


class _QuietReadOnly(std_logging.Filter):
    """Drops orbax's warning that a read-only manager's directory is read only: that is the point."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return "Given directory is read only" not in record.getMessage()


std_logging.getLogger("absl").addFilter(_QuietReadOnly())


def unreadable_metrics(directory: str) -> list[tuple[int, str]]:
    """(step, why) of the checkpoints in ``directory`` whose metrics item is not valid JSON."""
    bad = []
    names = os.listdir(directory) if os.path.isdir(directory) else []
    for name in sorted((n for n in names if n.isdigit()), key=int):
        path = os.path.join(directory, name, "metrics", "metrics")
        if not os.path.isfile(path):
            continue  # a missing item is the restore's to report
        try:
            with open(path) as f:
                json.load(f)
        except (OSError, ValueError) as e:
            bad.append((int(name), f"its metrics item cannot be read ({type(e).__name__}: {e})"))
    return bad


def brief(error: Exception, limit: int = 300) -> str:
    """``Type: message``, its first line at most ``limit`` characters: a failed tensorstore read
    carries its whole spec (dozens of lines) in the message."""
    text = str(error).strip()
    first = text.split("\n", 1)[0].split(" See full TensorStore details")[0]
    cut = len(first) > limit or first != text
    return f"{type(error).__name__}: {first[:limit]}{'...' if cut else ''}"


def _write_stderr(data: bytes) -> None:
    while data:
        data = data[os.write(2, data):]


class stderr_held:
    """``with stderr_held() as held:`` what is written to file descriptor 2 inside (Python and
    C++ threads alike) is held in a temporary file; ``held.release()`` writes it out, and what is
    not released is dropped (``held.lines`` counts it). asyncio's "... exception was never
    retrieved" records (a Task's, a gather's ``_GatheringFuture``'s), which reach whatever handler
    logging has (pytest's, a file), are dropped inside too: they are the same failed reads. So are
    the exceptions raised where Python cannot raise them (``sys.unraisablehook``): they are
    written to file descriptor 2 and not kept, since a hook that keeps them (pytest's, until the
    test ends) keeps the failed reads they reference alive, to be collected, and reported, after
    the restore is over. And so are the "coroutine ... was never awaited" warnings of the reads
    that never started (orbax closes its loop when the first read fails): a recorded warning
    keeps its coroutine alive (pytest's records, for the whole session)."""

    def __enter__(self) -> "stderr_held":
        sys.stderr.flush()
        self._file, self._saved, self.lines, self._dropped = tempfile.TemporaryFile(), os.dup(2), 0, 0
        os.dup2(self._file.fileno(), 2)
        std_logging.getLogger("asyncio").addFilter(self._drop_unretrieved)
        self._hook, sys.unraisablehook = sys.unraisablehook, self._write_unraisable
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", r"coroutine '.*' was never awaited", RuntimeWarning)
        return self

    def settle(self, quiet: float = 0.3, limit: float = 5.0) -> None:
        """Collect garbage until nothing more is written for ``quiet`` seconds (at most ``limit``):
        the failed reads finish on other threads, later on a loaded machine."""
        size, start = -1, time.time()
        while time.time() - start < limit:
            gc.collect()
            now = os.fstat(self._file.fileno()).st_size + self._dropped
            if now == size:
                return
            size = now
            time.sleep(quiet)

    def _drop_unretrieved(self, record: std_logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.split("\n", 1)[0].endswith(" exception was never retrieved"):
            self._dropped += message.count("\n") + 1
            return False
        return True

    @staticmethod
    def _write_unraisable(u: "sys.UnraisableHookArgs") -> None:
        text = f"{u.err_msg or 'Exception ignored in'}: {u.object!r}\n"
        text += "".join(traceback.format_exception(u.exc_type, u.exc_value, u.exc_traceback))
        _write_stderr(text.encode(errors="replace"))

    def release(self) -> None:
        self._restore()
        self._file.seek(0)
        _write_stderr(self._file.read())
        self._file.seek(0)
        self._file.truncate()  # released, not dropped: ``lines`` counts nothing

    def _restore(self) -> None:
        if self._saved is not None:
            sys.stderr.flush()
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._saved = None
            std_logging.getLogger("asyncio").removeFilter(self._drop_unretrieved)
            sys.unraisablehook = self._hook
            self._warnings.__exit__(None, None, None)

    def __exit__(self, *exc) -> None:
        self._restore()
        self._file.seek(0)
        self.lines = self._file.read().count(b"\n") + self._dropped
        self._file.close()


class Checkpointer:
    """Save and restore one run's checkpoints."""

    def __init__(self, workdir: str, keep: int = 3, *, read_only: bool = False, async_save: bool = True):
        self.directory = checkpoint_dir(workdir)
        self.read_only = read_only
        if read_only and not os.path.isdir(self.directory):
            workdir, hint = os.path.dirname(self.directory), ""
            if is_sweep(workdir):
                hint = f"; {workdir} is a sweep: its runs are its groups, {workdir}/groups/g0, g1, ..."
            parent, step = os.path.split(workdir)
            if step.isdigit() and os.path.basename(parent) == CHECKPOINT_DIR:  # a step folder, given for its run
                run = os.path.dirname(parent)
                hint = f"; {workdir} is the step-{step} checkpoint of the run in {run}: give the run's directory and the step (--workdir={run} --step={step})"
            raise CheckpointError(f"no checkpoint directory at {self.directory}{hint}")
        if read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0, max_to_keep=None)
        else:
            options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
        # Orbax parses every step's "metrics" item when the manager is built, so one torn
        # metrics file would stop every resume and inspection: such steps are set aside first.
        bad = unreadable_metrics(self.directory)
        if not read_only and jax.process_count() > 1:  # every process has looked before any moves a step
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("logic_jax: checkpoints scanned")
        for step, why in bad:
            if read_only:
                raise CorruptCheckpointError(f"{self.directory}/{step}: {why}; rerunning the training command moves it aside and resumes from the previous checkpoint")
            self._skip(step, why)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, run: dict, metrics: dict) -> None:
        tree = serialization.to_state_dict(state)
        metrics = dict(metrics, state_sha256=digest(tree))
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(tree),
            run=ocp.args.JsonSave(dict(run, format=FORMAT)),
            metrics=ocp.args.JsonSave(metrics),
        )
        self.manager.save(step, args=args)

    def read_run(self, step: int) -> dict:
        """The run item (config and members) of one step; foreign checkpoints raise.

        A checkpoint without a run item is foreign (CheckpointError); one whose run item
        cannot be read is damaged (CorruptCheckpointError: the caller may fall back).
        """
        if not os.path.isdir(os.path.join(self.directory, str(step), "run")):
            if any(os.path.isdir(os.path.join(self.directory, str(s), "run")) for s in self.steps() if s != step):
                raise CorruptCheckpointError(f"{self.directory}/{step}: its run item is missing (the run's other checkpoints have one)")
            raise CheckpointError(f"{self.directory}/{step}: not a logic_jax training checkpoint (it has no 'run' item)")
        try:
            run = self.manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))["run"]
        except Exception as e:  # noqa: BLE001 - orbax raises many types; name the directory
            raise CorruptCheckpointError(f"{self.directory}/{step}: its run item cannot be read ({type(e).__name__}: {e})") from None
        if not isinstance(run, dict) or run.get("format") != FORMAT:
            raise CheckpointError(f"{self.directory}/{step}: not a logic_jax training checkpoint (format {run.get('format') if isinstance(run, dict) else None!r}, expected {FORMAT!r})")
        return run

    def restore(self, step: int, abstract_state) -> tuple[Any, dict, dict]:
        """(state, run, metrics) of ``step``; ``abstract_state`` gives shapes and shardings."""
        target = serialization.to_state_dict(abstract_state)
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), run=ocp.args.JsonRestore(), metrics=ocp.args.JsonRestore()
            ),
        )
        expected = restored["metrics"].get("state_sha256")
        actual = digest(restored["state"]) if expected else None  # None: spread over several processes
        if expected and actual is not None and actual != expected:
            raise CheckpointError(f"{self.directory}/{step}: state digest {actual} differs from the saved {expected}")
        return serialization.from_state_dict(abstract_state, restored["state"]), restored["run"], restored["metrics"]

    def restore_latest(self, abstract_for: Callable[[dict], Any], step: int | None = None):
        """Restore the newest good checkpoint (or exactly ``step``); ``None`` if there is none.

        ``abstract_for(run)`` builds the abstract state from a checkpoint's run item, so a
        reader needs nothing but the directory. A checkpoint that fails to restore is
        reported and skipped (and, when writable, moved aside so the step can be saved again).
        """
        steps = self.steps() if step is None else [step]
        if step is not None and step not in self.steps():
            raise CheckpointError(f"{self.directory}: no checkpoint at step {step} (steps: {self.steps()})")
        skipped = []  # (step, why, where it was set aside)
        # Orbax reads each array in a coroutine of its own; when one read fails, the others fail
        # later (some during the next step's restore), each printing its error and its whole
        # tensorstore spec: thousands of lines. Once a restore has failed, they are dropped.
        # (Setting the step aside inside, with the manager's reload, lets them be collected here.)
        with stderr_held() as held:
            try:
                found = self._restore_first_good(abstract_for, steps, step, skipped)
            finally:
                if skipped:
                    held.settle()
                else:
                    held.release()
        note = f" [{held.lines} lines of orbax and tensorstore errors not shown]" if held.lines else ""
        for s, why, aside in skipped:
            self._report_skipped(s, why + note, aside)
        return found

    def _restore_first_good(self, abstract_for, steps: list[int], step: int | None, skipped: list):
        for s in reversed(steps):
            try:
                run = self.read_run(s)
            except CorruptCheckpointError as e:
                if step is not None:
                    raise
                skipped.append((s, str(e), self._set_aside(s)))
                continue
            abstract = abstract_for(run)  # a foreign run raises here, never skipped
            try:
                state, run, metrics = self.restore(s, abstract)
            except CheckpointError as e:  # digest mismatch
                if step is not None:
                    raise
                skipped.append((s, str(e), self._set_aside(s)))
            except Exception as e:  # noqa: BLE001 - any restore failure is a corrupted checkpoint
                if step is not None:
                    raise CheckpointError(f"{self.directory}/{s}: cannot be restored ({brief(e)})") from None
                skipped.append((s, brief(e), self._set_aside(s)))
            else:
                return s, state, run, metrics
        return None

    def _skip(self, step: int, why: str) -> None:
        self._report_skipped(step, why, self._set_aside(step))

    def _report_skipped(self, step: int, why: str, aside: str | None) -> None:
        logging.warning("checkpoint %s/%d is corrupted or half-written (%s); using the previous one", self.directory, step, why)
        if aside:
            logging.warning("moved the corrupted checkpoint to %s", aside)

    def _set_aside(self, step: int) -> str | None:
        """Move a bad step out of the checkpoint directory (when writable); returns where to, on process 0."""
        if self.read_only:
            return None
        # Process 0 moves it (the others share its filesystem): the resumed run will save this
        # step again, and every process must see it gone before orbax's next save.
        aside = os.path.join(os.path.dirname(self.directory), CORRUPT_DIR, str(step))
        if jax.process_index() == 0:
            if os.path.exists(aside):
                shutil.rmtree(aside)
            os.makedirs(os.path.dirname(aside), exist_ok=True)
            shutil.move(os.path.join(self.directory, str(step)), aside)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"logic_jax: checkpoint {step} moved aside")
        if hasattr(self, "manager"):  # not while __init__ sets torn steps aside, before it builds one
            self.manager.reload()
        return aside if jax.process_index() == 0 else None  # process 0 moved it, and says so

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
