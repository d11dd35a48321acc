"""A multi-host run rehearsed on this machine: two processes of launch/train.py --multihost, 2 CPU
devices each (gloo between them), train one 4-seed run.

They train bit for bit what one process with 4 devices trains; each chunk is logged once; a run
begun by one process resumes on two, past a damaged newest checkpoint; a SIGTERM to one process
(one host preempted) stops both at the same step with a checkpoint, and the rerun resumes to the
same bits.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from logic_jax.train import inspection, trainer
from train_fixtures import corrupt_files, tiny_config, write_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
RUN = dict(num_seeds=4, num_devices=4, steps_per_call=10)  # 2 x 2 devices there, 4 of 8 here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(config_file, workdir, processes=2, devices=2, script="train.py", flags=()):
    """``processes`` launch/``script`` processes joined by --multihost, ``devices`` CPU devices each."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # conftest's 8 devices
    env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
    where = [f"--coordinator_address=localhost:{_free_port()}", f"--num_processes={processes}"]
    cmd = [sys.executable, os.path.join(REPO, "launch", script), f"--config={config_file}", f"--workdir={workdir}", "--multihost", *where, *flags]
    return [
        subprocess.Popen(cmd + [f"--process_id={i}"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(processes)
    ]


def _finish(procs, timeout=300):
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, out, err))
    return outs


def _committed(workdir):
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _assert_same_state(workdir, reference):
    _, state, run, _ = inspection.load(workdir)
    ours, theirs = jax.tree_util.tree_flatten_with_path(state)[0], jax.tree_util.tree_flatten_with_path(jax.tree.map(np.asarray, reference))[0]
    assert len(ours) == len(theirs)
    for (path, x), (_, y) in zip(ours, theirs):
        assert x.dtype == y.dtype and np.array_equal(x, y), jax.tree_util.keystr(path)
    return run


def test_two_processes_train_what_one_process_trains(tmp_path):
    overrides = dict(RUN, num_steps=30, checkpoint_every=10, eval_every=10)
    workdir = str(tmp_path / "two")
    outs = _finish(_launch(write_config_file(tmp_path / "cfg.py", TESTS, **overrides), workdir))
    for i, (rc, out, err) in enumerate(outs):
        assert rc == 0, (i, err[-3000:])
        assert "step 30: exact match" in out, (i, out)  # every process evaluates (the decode is sharded too)
        assert "--multihost: waiting for all 2 processes to join at localhost:" in err and f"(this is process {i})" in err, err[:2000]  # not a silent wait
    reference = trainer.train(tiny_config(**overrides), str(tmp_path / "one"))  # one process, 4 of its devices
    run = _assert_same_state(workdir, reference.state)
    assert len(run["members"]) == 4
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [(r["kind"], r["step"]) for r in records] == [(k, s) for s in (10, 20, 30) for k in ("train", "eval")]  # once, by process 0
    assert not [n for n in os.listdir(workdir) if ".tmp" in n]

    # A run started by one process goes on with two: its good checkpoints are not taken for
    # corrupt, and a damaged newest one is moved aside by process 0 while the other waits.
    moved = str(tmp_path / "moved")
    trainer.train(tiny_config(**dict(overrides, num_steps=20)), moved)
    corrupt_files(os.path.join(moved, "checkpoints", "20", "state"))
    outs = _finish(_launch(write_config_file(tmp_path / "cfg.py", TESTS, **overrides), moved))
    assert [rc for rc, _, _ in outs] == [0, 0], [err[-3000:] for _, _, err in outs]
    assert f"resuming {moved} from step 10" in outs[0][2]
    assert os.listdir(os.path.join(moved, "corrupt_checkpoints")) == ["20"]
    _assert_same_state(moved, reference.state)


def test_fewer_devices_than_all_take_a_share_of_every_process(tmp_path):
    """num_devices=2 of 2 x 2: one device of each process (the first two would both be process 0's)."""
    overrides = dict(RUN, num_seeds=2, num_devices=2, num_steps=10, checkpoint_every=10, eval_every=10)
    workdir = str(tmp_path / "two")
    outs = _finish(_launch(write_config_file(tmp_path / "cfg.py", TESTS, **overrides), workdir), timeout=200)  # it hung, before
    assert [rc for rc, _, _ in outs] == [0, 0], [err[-3000:] for _, _, err in outs]
    _assert_same_state(workdir, trainer.train(tiny_config(**overrides), str(tmp_path / "one")).state)


def test_sigterm_to_one_host_stops_both_at_one_step_and_the_rerun_resumes(tmp_path):
    # A checkpoint after every chunk: a signal always lands in a chunk that follows a save
    # (orbax's saves once hid it from JAX's preemption sync point).
    overrides = dict(RUN, num_steps=300, checkpoint_every=10, eval_every=0)
    config_file = write_config_file(tmp_path / "cfg.py", TESTS, **overrides)
    workdir = str(tmp_path / "run")
    procs = _launch(config_file, workdir)
    deadline = time.time() + 240
    while not _committed(workdir) and all(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
    time.sleep(0.5)
    procs[1].send_signal(signal.SIGTERM)  # one host is preempted; the next chunk's all-gather tells the other
    outs = _finish(procs)
    for i, (rc, _, err) in enumerate(outs):
        assert rc == 128 + signal.SIGTERM, (i, rc, err[-3000:])
    stopped = int(outs[0][2].split("SIGTERM: stopped at step ")[1].split()[0])
    assert 10 < stopped < 300 and _committed(workdir)[-1] == stopped

    outs = _finish(_launch(config_file, workdir))
    assert [rc for rc, _, _ in outs] == [0, 0], [err[-3000:] for _, _, err in outs]
    assert f"resuming {workdir} from step {stopped}" in outs[0][2], outs[0][2][-2000:]  # process 0 logs
    reference = trainer.train(tiny_config(**overrides), str(tmp_path / "one"))
    _assert_same_state(workdir, reference.state)
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(10, 301, 10))  # each chunk logged once over the two runs


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num_processes=2"], "--num_processes only apply with --multihost"),
        (["--multihost", "--num_processes=2", "--process_id=2"], "--process_id=2 must be below --num_processes=2"),
        (["--multihost", "--coordinator_address=notahost"], "--coordinator_address=notahost: must be host:port"),
        (["--multihost"], "--multihost: jax.distributed.initialize failed (ValueError"),  # no cluster manager here
    ],
)
def test_bad_multihost_flags_are_named(tmp_path, flags, message):
    config_file = write_config_file(tmp_path / "cfg.py", TESTS, **RUN)
    cmd = [sys.executable, os.path.join(REPO, "launch", "train.py"), f"--config={config_file}", f"--workdir={tmp_path / 'w'}", *flags]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert not os.path.exists(tmp_path / "w")


def test_a_sweep_on_two_processes(tmp_path):
    # configs/sweep.py, shrunk: 4 points (2 widths x 2 learning rates) of 2 seeds, 2 groups of 4 members.
    small = dict(num_steps=20, steps_per_call=10, checkpoint_every=10, eval_every=10, eval_size=32, batch_size=16, progress=False, num_devices=4)
    flags = [f"--config.{k}={v}" for k, v in small.items()] + ["--config.optim.decay_steps=20"]
    outs = _finish(_launch(os.path.join(REPO, "configs", "sweep.py"), str(tmp_path), script="sweep.py", flags=flags))
    assert [rc for rc, _, _ in outs] == [0, 0], [err[-3000:] for _, _, err in outs]
    assert "| point |" in outs[0][1] and "| point |" not in outs[1][1]  # the table, from process 0 only
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["point"], r["group"], r["seeds"], r["step"]) for r in rows] == [("0", "0", "2", "20"), ("1", "0", "2", "20"), ("2", "1", "2", "20"), ("3", "1", "2", "20")]
