"""Stop a run cleanly when it is told to: the chunk in flight ends, a checkpoint is saved, and
the run returns, so that rerunning the same command resumes from that step.

Schedulers (Slurm, Kubernetes, preemptible cloud VMs, ``timeout``) send SIGTERM some seconds
before they kill a job; a user presses Ctrl-C (SIGINT). Without this, the work since the
last periodic checkpoint is lost. A second signal of the same kind stops at once, as usual.

On several hosts (processes) they must agree on the step at which they all save: each process
catches its own signals, and after every chunk they share what they caught (a tiny all-gather),
so a signal to any one of them stops all of them after the same chunk. (JAX's preemption
service is not used: orbax's saves call its sync point with their own step numbers, which
breaks the agreement; launch/train.py --multihost turns it off.)
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import numpy as np

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """``with StopRequest() as stop: ... if stop.requested(): save and return``."""

    def __init__(self, signals=SIGNALS):
        self.signals = tuple(signals)
        self.signal: int | None = None  # the signal received, if any
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signal == signum:  # the second time: the usual behaviour, at once
            signal.signal(signum, self._previous[signum])
            signal.raise_signal(signum)
            return
        self.signal = signum
        print(
            f"received {signal.Signals(signum).name}: stopping after the current chunk and saving a checkpoint "
            f"(send it again to stop at once, without saving)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> "StopRequest":
        # Handlers can only be set from the main thread.
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                # An ignored signal stays ignored (nohup, `cmd &` in a script: SIGINT), and a
                # handler set outside Python (None here) cannot be put back, so it is left alone.
                if signal.getsignal(s) not in (signal.SIG_IGN, None):
                    self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def requested(self) -> bool:
        """True once a stop was asked for, here or on any other process; call it after every
        chunk, on every process (with several, it is a collective)."""
        import jax  # here: a launcher enters a StopRequest before it imports JAX

        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            caught = multihost_utils.process_allgather(np.int32(self.signal or 0))
            if self.signal is None and caught.max() > 0:
                self.signal = int(caught.max())
        return self.signal is not None

    @property
    def name(self) -> str | None:
        return None if self.signal is None else signal.Signals(self.signal).name


def caught(stop: StopRequest | None = None):
    """``with caught(stop) as stop:`` the caller's StopRequest (already entered: a launcher's, or a
    sweep's shared by its groups) or, given None, a new one for this block."""
    return contextlib.nullcontext(stop) if stop is not None else StopRequest()


def exit_status(name: str) -> int:
    """The exit status of a process killed by signal ``name`` (128 + its number): schedulers requeue on it."""
    return 128 + signal.Signals[name].value
