"""Every launch script's --help lists its own flags (absl lists only the main module's by default)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = {
    "analyze.py": ("--workdir", "--out", "--seeds", "--n_accuracy"),
    "generate.py": ("--checkpoint", "--dtype", "--max_new_tokens"),
    "inspect.py": ("--workdir", "--step", "--problems", "--format", "--attention", "--curves"),
    "patch_mistral.py": ("--checkpoint", "--batch_size"),
    "sample.py": ("--num", "--seed", "--depth", "--format", "--out"),
    "sweep.py": ("--config", "--workdir", "--[no]multihost", "--coordinator_address", "--num_processes", "--process_id"),
    "train.py": ("--config", "--workdir", "--[no]multihost", "--coordinator_address", "--num_processes", "--process_id"),
}


@pytest.mark.parametrize("script", sorted(FLAGS))
def test_help_lists_the_scripts_flags(script):
    proc = subprocess.run([sys.executable, os.path.join("launch", script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    listed = {line.split(":")[0].strip() for line in proc.stdout.splitlines() if line.startswith("  --")}
    assert set(FLAGS[script]) <= listed, (script, sorted(listed), proc.stderr[-2000:])  # absl's --help exits 1


def test_every_launch_script_is_covered():
    assert sorted(f for f in os.listdir(os.path.join(ROOT, "launch")) if f.endswith(".py")) == sorted(FLAGS)
