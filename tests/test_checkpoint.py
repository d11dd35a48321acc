"""Checkpoints: a killed run resumes bitwise, corrupted checkpoints fall back, foreign dirs fail."""

import asyncio
import gc
import glob
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import types
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from logic_jax.train import inspection, trainer
from logic_jax.train.checkpoint import CheckpointError, Checkpointer, stderr_held
from train_fixtures import corrupt_files, tiny_config, write_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")


def _host(state):
    return jax.tree.map(np.asarray, state)


def _assert_bitwise(a, b):
    la, lb = jax.tree_util.tree_flatten_with_path(_host(a))[0], jax.tree_util.tree_flatten_with_path(_host(b))[0]
    assert len(la) == len(lb)
    for (path, x), (_, y) in zip(la, lb):
        assert x.dtype == y.dtype and np.array_equal(x, y), jax.tree_util.keystr(path)


def _committed(workdir):
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _launch_train(tmp_path, overrides, workdir):
    """launch/train.py on the tiny config with ``overrides``, in a child process.

    Its SIGINT is reset to the default, as from a terminal: a test run in the background
    (`pytest &` in a script) would pass on an ignored SIGINT, which the trainer leaves ignored.
    """
    config_file = write_config_file(tmp_path / "cfg.py", TESTS, **overrides)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # the child starts with SIG_DFL
    try:
        return subprocess.Popen(
            [sys.executable, os.path.join(REPO, "launch", "train.py"), f"--config={config_file}", f"--workdir={workdir}"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def test_killed_run_resumes_bitwise(tmp_path):
    overrides = dict(num_steps=300, checkpoint_every=10, steps_per_call=10)
    killed = str(tmp_path / "killed")
    proc = _launch_train(tmp_path, overrides, killed)
    deadline = time.time() + 240
    while not _committed(killed) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.3))  # somewhere after the first checkpoint, maybe mid-save
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    steps = _committed(killed)
    assert steps and steps[-1] < 300, steps
    resumed = trainer.train(tiny_config(**overrides), killed)
    reference = trainer.train(tiny_config(**overrides), str(tmp_path / "reference"))
    assert resumed.step == reference.step == 300 and resumed.resumed_from in steps
    _assert_bitwise(resumed.state, reference.state)
    # The log reads like an uninterrupted run's: each chunk once.
    records = [json.loads(l) for l in open(os.path.join(killed, "metrics.jsonl")) if '"train"' in l]
    assert [r["step"] for r in records] == list(range(10, 301, 10))
    # Wall time is summed over the restart: it never goes back, and ends at the run's total.
    walls = [r["wall_s"] for r in records]
    assert walls == sorted(walls) and 0 < walls[0] and walls[-1] <= resumed.wall_time


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_after_the_chunk_with_a_checkpoint(tmp_path, sig):
    # checkpoint_every is past the end: only the stop can save before step 300.
    overrides = dict(num_steps=300, checkpoint_every=1000, steps_per_call=10)
    stopped = str(tmp_path / "stopped")
    proc = _launch_train(tmp_path, overrides, stopped)
    log = os.path.join(stopped, "metrics.jsonl")
    deadline = time.time() + 240
    while not (os.path.exists(log) and '"train"' in open(log).read()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=240)
    err = err.decode()
    assert proc.returncode == 128 + sig, err[-2000:]
    steps = _committed(stopped)
    assert len(steps) == 1 and 10 <= steps[0] < 300 and steps[0] % 10 == 0, steps
    assert f"{signal.Signals(sig).name}: stopped at step {steps[0]} and saved a checkpoint" in err
    assert os.path.getsize(os.path.join(stopped, "curves.png")) > 10_000  # drawn from what was logged
    resumed = trainer.train(tiny_config(**overrides), stopped)
    reference = trainer.train(tiny_config(**overrides), str(tmp_path / "reference"))
    assert resumed.stopped_by is None and resumed.step == 300 and resumed.resumed_from == steps[0]
    _assert_bitwise(resumed.state, reference.state)


def test_a_signal_during_start_up_stops_before_training(tmp_path):
    """Ctrl-C while the run initialises and compiles: caught (it used to raise inside JAX: a
    traceback, a segfault, or an exception swallowed by a callback and the run went on)."""
    workdir = str(tmp_path / "early")
    proc = _launch_train(tmp_path, dict(num_steps=300, checkpoint_every=10, steps_per_call=10), workdir)
    deadline = time.time() + 240
    while not os.path.exists(os.path.join(workdir, "run.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # run.json is written before initialisation and compilation
    _, err = proc.communicate(timeout=240)
    err = err.decode()
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "SIGINT: stopped at step 0 before training; rerun the same command to resume" in err and "Traceback" not in err, err[-2000:]
    assert _committed(workdir) == []


def _orbax_coroutines():
    """Orbax's coroutines still alive: the reads of a damaged array's chunks, left pending when
    another read failed. Not collected during the restore, they report their errors (about 70,
    each with its tensorstore spec) when they are, later: in another test, or after the last."""
    return [o for o in gc.get_objects() if type(o) is types.CoroutineType and "orbax" in o.cr_code.co_filename]


def _unretrieved_gather() -> None:
    """A gather of reads, one failed, that nobody awaits, as orbax leaves them after a damaged
    array: asyncio logs its "_GatheringFuture exception was never retrieved" when it is collected."""

    async def failed_read():
        raise ValueError("Encountered error while reading array index")

    async def restore():
        asyncio.gather(failed_read())
        await asyncio.sleep(0.01)

    asyncio.run(restore())
    gc.collect()


def test_held_stderr_drops_the_unretrieved_exceptions_of_gathers_too(caplog):
    # It once dropped only Tasks' records, and the fallback test below failed now and then.
    def never_retrieved():
        return [r for r in caplog.records if "exception was never retrieved" in r.getMessage()]

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        _unretrieved_gather()
        assert [r.getMessage().split("\n")[0] for r in never_retrieved()] == ["_GatheringFuture exception was never retrieved"]
        caplog.clear()
        with stderr_held() as held:
            _unretrieved_gather()
        assert never_retrieved() == [] and held.lines > 1  # counted, with its traceback


def _unstarted_read() -> None:
    """A read that never started, as orbax leaves those it had not started when the first one
    failed (it closes its event loop): collected, it warns "coroutine ... was never awaited"."""

    async def read_array_index():
        pass

    reads = [read_array_index()]
    del reads
    gc.collect()


def test_held_stderr_drops_the_warnings_of_reads_never_started():
    # A recorded warning keeps its coroutine alive: pytest's records kept one for the whole
    # session, and every later fallback case found it (one loaded run in many).
    def alive():
        return [o for o in gc.get_objects() if type(o) is types.CoroutineType and o.cr_code.co_name == "read_array_index"]

    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        _unstarted_read()
        assert [str(w.message).endswith("read_array_index' was never awaited") for w in log] == [True]
        assert len(alive()) == 1
        log.clear()
        gc.collect()
        assert alive() == []
        with stderr_held():
            _unstarted_read()
        assert log == [] and alive() == []
        _unstarted_read()  # the filter ends with the hold
        assert len(log) == 1


@pytest.mark.parametrize("how", ["garbage", "array data", "digest", "run item", "metrics item", "no run item"])
def test_corrupted_latest_checkpoint_falls_back(tmp_path, caplog, capfd, how):
    workdir, reference_dir = str(tmp_path / "run"), str(tmp_path / "reference")
    trainer.train(tiny_config(num_steps=20), workdir)
    assert _committed(workdir) == [10, 20]
    if how == "garbage":
        corrupt_files(os.path.join(workdir, "checkpoints", "20", "state"))
    elif how == "array data":  # the index intact, the arrays' data not: every array's read fails on its own
        for path in glob.glob(os.path.join(workdir, "checkpoints", "20", "state", "ocdbt.process_*", "d", "*")):
            open(path, "wb").write(os.urandom(100))
    elif how == "run item":  # the config and members, torn
        path = os.path.join(workdir, "checkpoints", "20", "run", "metadata")
        text = open(path).read()
        open(path, "w").write(text[: len(text) // 2])
    elif how == "no run item":  # deleted: the other checkpoints show what the run is, so this one is damaged, not foreign
        shutil.rmtree(os.path.join(workdir, "checkpoints", "20", "run"))
    elif how == "metrics item":  # orbax parses these when it opens the directory: it stopped every resume and inspect
        path = os.path.join(workdir, "checkpoints", "20", "metrics", "metrics")
        text = open(path).read()
        open(path, "w").write(text[: len(text) // 2])
        with pytest.raises(CheckpointError, match=r"checkpoints/20: its metrics item cannot be read .*rerunning the training command moves it aside"):
            inspection.inspect_run(workdir)
    else:  # a state that restores but is not what was saved
        path = os.path.join(workdir, "checkpoints", "20", "metrics", "metrics")
        metrics = json.load(open(path))
        metrics["state_sha256"] = "0" * 64
        json.dump(metrics, open(path, "w"))
    # A half-written save of a later step (a kill during the write) is ignored.
    os.makedirs(os.path.join(workdir, "checkpoints", "30.orbax-checkpoint-tmp-1234", "state"))
    gc.collect()
    assert _orbax_coroutines() == []  # an earlier case's failed reads are not reported in this one
    caplog.clear()
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        resumed = trainer.train(tiny_config(num_steps=30), workdir)
    assert any("checkpoints/20 is corrupted or half-written" in r.getMessage() for r in caplog.records)
    # One line says so: not orbax's stragglers, each with its tensorstore spec (thousands of lines).
    assert all(len(r.getMessage()) < 1000 for r in caplog.records)
    err = capfd.readouterr().err
    assert len(err.splitlines()) < 20 and "TensorStore({" not in err, err[:3000]
    assert resumed.resumed_from == 10  # the previous checkpoint, not a fresh start
    gc.collect()
    assert _orbax_coroutines() == []
    assert os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", "20"))
    reference = trainer.train(tiny_config(num_steps=30), reference_dir)
    _assert_bitwise(resumed.state, reference.state)
    assert 20 in _committed(workdir) and 30 in _committed(workdir)


def test_a_resumed_run_says_which_run_length_keys_changed(tmp_path, capsys):
    workdir = str(tmp_path)
    trainer.train(tiny_config(num_steps=10), workdir)
    capsys.readouterr()
    trainer.train(tiny_config(num_steps=20, eval_size=16, progress=False), workdir)
    assert f"resuming {workdir} from step 10 (eval_size: 32 -> 16; num_steps: 10 -> 20)\n" in capsys.readouterr().err
    trainer.train(tiny_config(num_steps=20, eval_size=16), workdir)  # nothing changed (the step-20 checkpoint holds eval_size 16)
    assert f"resuming {workdir} from step 20\n" in capsys.readouterr().err


def test_a_workdir_another_process_trains_in_is_refused(tmp_path):
    import fcntl

    from logic_jax.train.files import LOCK_FILE, WorkdirBusyError

    with open(tmp_path / LOCK_FILE, "a") as held:  # as the other process holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(WorkdirBusyError, match=rf"workdir {tmp_path} is in use: another process is training in it"):
            trainer.train(tiny_config(num_steps=10), str(tmp_path))
        assert not os.path.exists(tmp_path / "checkpoints")
    assert trainer.train(tiny_config(num_steps=10), str(tmp_path)).step == 10  # released: it trains
    assert trainer.train(tiny_config(num_steps=20), str(tmp_path)).step == 20  # and this process let go of it


def test_checkpoints_of_another_run_are_refused(tmp_path):
    workdir = str(tmp_path)
    trainer.train(tiny_config(num_steps=10), workdir)
    os.remove(os.path.join(workdir, trainer.RUN_FILE))  # only the checkpoints say what they hold
    with pytest.raises(trainer.RunMismatchError, match=r"model.d_mlp: 32 -> 64"):
        trainer.train(tiny_config(num_steps=10, **{"model.d_mlp": 64}), workdir)


def test_a_url_workdir_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="workdir gs://bucket/run: URLs are not supported"):
        trainer.train(tiny_config(), "gs://bucket/run")
    assert not os.listdir(tmp_path)


def test_missing_and_foreign_checkpoint_directories(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint directory at .*nowhere"):
        Checkpointer(str(tmp_path / "nowhere"), read_only=True)
    (tmp_path / "run" / "checkpoints" / "200").mkdir(parents=True)  # a step folder given as the workdir
    with pytest.raises(CheckpointError, match=rf"is the step-200 checkpoint of the run in {tmp_path / 'run'}: .*--workdir={tmp_path / 'run'} --step=200"):
        Checkpointer(str(tmp_path / "run" / "checkpoints" / "200"), read_only=True)
    foreign = tmp_path / "foreign"
    with ocp.CheckpointManager(str(foreign / "checkpoints")) as manager:
        manager.save(1, args=ocp.args.Composite(other=ocp.args.JsonSave({"a": 1})))
        manager.wait_until_finished()
    ckpt = Checkpointer(str(foreign), read_only=True)
    with pytest.raises(CheckpointError, match=r"foreign/checkpoints/1: not a logic_jax training checkpoint"):
        ckpt.restore_latest(lambda run: None)
