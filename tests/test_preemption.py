"""StopRequest: the first signal asks the run to stop, a second one acts at once; handlers are restored."""

import os
import signal
import time

import pytest

from logic_jax.train.preemption import StopRequest


def _deliver(sig):
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # Python runs the handler in the main thread at its next bytecode


def test_first_signal_asks_to_stop_second_interrupts_and_handlers_come_back():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested() and stop.name is None
        _deliver(signal.SIGINT)
        assert stop.requested() and stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # the usual Ctrl-C, at once
            _deliver(signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_sigterm_is_caught_too():
    with StopRequest() as stop:
        _deliver(signal.SIGTERM)  # without the handler this would end the test process
        assert stop.requested() and stop.name == "SIGTERM"
