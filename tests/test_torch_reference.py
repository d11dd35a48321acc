"""bench/torch_reference.py takes the JAX config's numerics: TF32 and bfloat16 map to PyTorch's."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*flags):
    cmd = [sys.executable, "bench/torch_reference.py", "--config=configs/tiny_cpu.py", "--seeds=1", "--steps=2", "--nojax",
           "--config.batch_size=8", *flags]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc


@pytest.mark.parametrize(
    "flags, precision, autocast",
    [
        ((), "high", False),  # JAX's default allows TF32 on a GPU
        (("--config.model.matmul_precision=float32",), "highest", False),
        (("--config.model.matmul_precision=BF16_BF16_F32",), "highest", True),
        (("--config.model.dtype=bfloat16",), "high", True),
    ],
)
def test_numerics_follow_the_config(flags, precision, autocast):
    proc = _run(*flags)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    assert (out["torch_matmul_precision"], out["torch_autocast_bf16"]) == (precision, autocast)
    first, last = out["loss_first_last"][0]
    assert out["with_data_seed_steps_per_s"] > 0 and first > 0 and last > 0


def test_a_precision_without_equivalent_is_named():
    proc = _run("--config.model.matmul_precision=bogus")
    assert proc.returncode != 0 and "model.matmul_precision" in proc.stderr and "bogus" in proc.stderr
