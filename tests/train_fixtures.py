"""Tiny trainer configs for the tests: 1 layer, d_model 16, depth 2, a few steps."""

import os
import signal
import struct

from logic_jax.train.config import base_config


def tiny_config(**overrides):
    c = base_config()
    c.num_seeds = 2
    c.num_steps = 20
    c.batch_size = 16
    c.steps_per_call = 10
    c.checkpoint_every = 10
    c.eval_every = 0
    c.eval_size = 32
    c.num_devices = 1
    c.progress = False
    c.problem.depth = 2
    c.model.update(n_layers=1, n_heads=2, d_model=16, d_mlp=32)
    c.optim.update(lr=1e-2, warmup_steps=5, decay_steps=20)
    for key, value in overrides.items():
        node = c
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return c


CONFIG_FILE = '''
import sys
sys.path.insert(0, {tests!r})
from train_fixtures import tiny_config

def get_config():
    return tiny_config(**{overrides!r})
'''


def write_config_file(path, tests_dir, **overrides):
    """A configs/*.py-style file for the launch scripts (subprocess tests)."""
    with open(path, "w") as f:
        f.write(CONFIG_FILE.format(tests=str(tests_dir), overrides=overrides))
    return str(path)


def signal_after(train):
    """``train``, then a SIGTERM to this process: as if it came in a sweep group's last chunk (the
    group is complete, and the sweep stops after it)."""

    def train_then_signal(*args, **kwargs):
        result = train(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return result

    return train_then_signal


def corrupt_files(directory):
    """Overwrite every file under ``directory`` with random bytes of the same size (a damaged disk)."""
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            size = os.path.getsize(path)
            with open(path, "wb") as f:
                f.write(os.urandom(max(size, 8)))


def tensorboard_events(logdir):
    """Every event of a TensorBoard directory: its event files in name (start-time) order."""
    from tensorboardX.proto.event_pb2 import Event

    for name in sorted(os.listdir(logdir)):
        data, i = open(os.path.join(logdir, name), "rb").read(), 0
        while i < len(data):  # TFRecords: length (8 bytes), its crc (4), the event, its crc (4)
            (n,) = struct.unpack("<Q", data[i : i + 8])
            yield Event.FromString(data[i + 12 : i + 12 + n])
            i += 16 + n
