"""Stop a run cleanly when it is told to: the chunk in flight ends, a checkpoint is saved, and
the run returns, so that rerunning the same command resumes from that step.

Schedulers (Slurm, Kubernetes, preemptible cloud VMs, ``timeout``) send SIGTERM some seconds
before they kill a job; a user presses Ctrl-C (SIGINT). Without this, the work since the
last periodic checkpoint is lost. A second signal of the same kind stops at once, as usual.

On several hosts the hosts must agree on the step at which they all save: JAX's preemption
service (started by ``jax.distributed.initialize``) catches SIGTERM there, and
``reached_preemption_sync_point`` says when every host has reached that step.
"""

from __future__ import annotations

import itertools
import signal
import sys
import threading

import jax

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The multi-host sync point wants consecutive, increasing ids, also across the runs of a sweep.
_sync_ids = itertools.count(1)
_sync_service_error: RuntimeError | None = None  # set once the service has failed: no more calls


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
        # Handlers can only be set from the main thread. With several hosts none is set: JAX's
        # own SIGTERM handler starts the hosts' agreement on a step, and Ctrl-C stays Ctrl-C.
        if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
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
        """True once a stop was asked for; call it after every chunk (on every host)."""
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            # Every host runs the same chunks, so its count of calls is the same.
            global _sync_service_error
            if _sync_service_error is None:
                try:
                    if multihost_utils.reached_preemption_sync_point(next(_sync_ids)):
                        self.signal = signal.SIGTERM
                except RuntimeError as e:  # the preemption service is off (or failed): say so, once
                    _sync_service_error = e
                    print(f"warning: a SIGTERM will end this run without a checkpoint: JAX's preemption service: {e}", file=sys.stderr, flush=True)
        return self.signal is not None

    @property
    def name(self) -> str | None:
        return None if self.signal is None else signal.Signals(self.signal).name


def exit_status(name: str) -> int:
    """The exit status of a process killed by signal ``name`` (128 + its number): schedulers requeue on it."""
    return 128 + signal.Signals[name].value
