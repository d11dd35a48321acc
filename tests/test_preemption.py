"""StopRequest: the first signal asks the run to stop, a second one acts at once; handlers are restored."""

import os
import signal
import time

import pytest

from logic_jax.train.preemption import StopRequest


def _deliver(sig):
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # Python runs the handler in the main thread at its next bytecode


@pytest.fixture
def sigint(request):
    """SIGINT set to ``request.param`` for the test: Python's Ctrl-C handler, or ignored (as in
    `pytest ... &` from a script, which would otherwise decide what these tests see)."""
    previous = signal.signal(signal.SIGINT, request.param)
    yield request.param
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("sigint", [signal.default_int_handler], indirect=True)
def test_first_signal_asks_to_stop_second_interrupts_and_handlers_come_back(sigint):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested() and stop.name is None
        _deliver(signal.SIGINT)
        assert stop.requested() and stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # the usual Ctrl-C, at once
            _deliver(signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.parametrize("sigint", [signal.SIG_IGN], indirect=True)
def test_an_ignored_signal_stays_ignored(sigint):
    with StopRequest() as stop:
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) == stop._handle
        _deliver(signal.SIGINT)
        assert not stop.requested()
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_sigterm_is_caught_too():
    with StopRequest() as stop:
        _deliver(signal.SIGTERM)  # without the handler this would end the test process
        assert stop.requested() and stop.name == "SIGTERM"

