"""Test-wide set-up: 8 simulated CPU devices, so sharding tests run on any machine, and one
persistent compilation cache for the session."""

import atexit
import gc
import os
import shutil
import tempfile

# Must happen before jax is imported anywhere (once: pytest-xdist workers inherit it).
_EIGHT_DEVICES = "--xla_force_host_platform_device_count=8"
if not os.environ.get("XLA_FLAGS", "").endswith(_EIGHT_DEVICES):  # the last one counts
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _EIGHT_DEVICES).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Dozens of tests, in the pytest-xdist workers and the launch/ processes (which all inherit this
# environment), compile the same tiny models: with XLA's persistent cache, new for each session,
# each compiles once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="logic_jax_tests_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")


def pytest_sessionfinish(session):
    """pytest ends with five full garbage collections, each a walk over the million objects JAX's
    caches hold by then (seconds on 2 cores); a pytest-xdist worker still busy 5 s after its last
    test gets a SIGINT from execnet (a KeyboardInterrupt in the log). One collection here, before
    the worker reports, then freezing what survives, makes those five instant."""
    gc.collect()
    gc.freeze()
