"""A width x learning-rate sweep of the CPU-sized run, 2 seeds per point.

    python launch/sweep.py --config=configs/sweep.py --workdir=runs/sweep
    # another grid: --config.sweep.optim.lr="(1e-3,3e-3,1e-2)" --config.sweep.model.d_model="(32,64)"

4 points x 2 seeds: the two learning rates of one width train together (one vmap of 4 members),
so the sweep runs 2 groups. Keys that may be swept: any config key, added to ``c.sweep`` in this
file or a copy (the command line changes the values of the axes that the file has, not new
ones); points that differ only in ``seed`` and ``optim.*`` share a vmap. Summary:
runs/sweep/summary.md, summary.csv and curves.png.
"""

import importlib.util
import os

import ml_collections


def _tiny_cpu():
    # configs/ is not a package: load the sibling file by path.
    spec = importlib.util.spec_from_file_location("tiny_cpu", os.path.join(os.path.dirname(__file__), "tiny_cpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config():
    c = _tiny_cpu().get_config()
    c.sweep = ml_collections.ConfigDict()
    c.sweep.model = ml_collections.ConfigDict(dict(d_model=(32, 48)))
    c.sweep.optim = ml_collections.ConfigDict(dict(lr=(3e-3, 1e-2)))
    return c
