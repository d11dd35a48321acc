"""Every launch script's --help lists its own flags (absl lists only the main module's by default);
config mistakes on the command line are one-line errors, not tracebacks."""

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


def test_help_shows_the_usage_lines_as_written():
    proc = subprocess.run([sys.executable, os.path.join("launch", "generate.py"), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert '--prompt="The capital of France is" \\\n        [--max_new_tokens=32]' in proc.stdout, proc.stdout[:600]


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("train.py", ["--config=configs/tiny_cpu.py", "--config.foo=1"], "unknown config key 'foo' (--config.foo=1)"),
        ("train.py", ["--config=configs/tiny_cpu.py", "--config.model.d_modell=3"], "unknown config key 'model.d_modell' (--config.model.d_modell=3); did you mean 'model.d_model'?"),
        ("train.py", ["--config=configs/nonexist.py"], "cannot load the config file of --config=configs/nonexist.py: [Errno 2] No such file"),
        ("sweep.py", ["--config=configs/sweep.py", "--config.sweep.optim.weight_decay=(0.0,0.1)"], "a new sweep axis goes in a config file"),
    ],
)
def test_config_mistakes_are_one_line_errors(tmp_path, script, args, message):
    workdir = tmp_path / "w"
    proc = subprocess.run([sys.executable, os.path.join("launch", script), f"--workdir={workdir}", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not workdir.exists()


def test_a_device_out_of_memory_is_one_line_naming_the_keys(tmp_path):
    args = ["--config=configs/tiny_cpu.py", "--config.batch_size=1000000000", "--config.num_seeds=1", "--config.num_devices=1", "--config.steps_per_call=5", "--config.progress=False"]
    proc = subprocess.run([sys.executable, os.path.join("launch", "train.py"), f"--workdir={tmp_path / 'w'}", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "error: out of device memory (RESOURCE_EXHAUSTED: Out of memory allocating" in proc.stderr and "lower config key batch_size" in proc.stderr


def test_every_launch_script_is_covered():
    assert sorted(f for f in os.listdir(os.path.join(ROOT, "launch")) if f.endswith(".py")) == sorted(FLAGS)
