"""Test-wide set-up: 8 simulated CPU devices, so sharding tests run on any machine, and one
persistent compilation cache for the session."""

import atexit
import os
import shutil
import tempfile

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Dozens of tests, and the launch/ processes they start (which inherit this environment), compile
# the same tiny models: with XLA's persistent cache, new for each session, each compiles once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="logic_jax_tests_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
