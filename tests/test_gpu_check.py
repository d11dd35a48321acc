"""bench/gpu_check.sh rehearsed on the CPU at tiny sizes, so a GPU session never spends its
device time on a broken script. Slow (about 3 minutes on 2 cores): CI skips it."""

import json
import os
import subprocess
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_part(part, out):
    env = dict(os.environ, GPU_CHECK_SMOKE="1", OUT=str(out), TRAIN_WORKDIR=str(out / "train_workdir"))
    proc = subprocess.run(["bash", "bench/gpu_check.sh", part], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with tarfile.open(out / "gpu_check.tgz") as tar:
        tar.extractall(out, filter="data")
    return out / "gpu_check"


@pytest.mark.slow
def test_gpu_check_smoke(tmp_path):
    results = _run_part("all", tmp_path / "all")
    status = (results / "status.txt").read_text().splitlines()
    assert [line.split()[0] for line in status] == ["sampler", "train_mfu", "train_seeds", "torch_reference", "patching_sweep", "mistral_forward"]
    failed = [line for line in status if " rc=0 " not in line]
    assert not failed, "\n".join(failed + [(results / f"{line.split()[0]}.log").read_text()[-2000:] for line in failed])
    for name in ("sampler", "train_mfu", "train_seeds", "torch_reference"):
        assert json.loads((results / f"{name}.json").read_text()), name
    assert "jax" in (results / "machine.txt").read_text()

    results = _run_part("train_small", tmp_path / "train")
    assert (results / "status.txt").read_text().startswith("train_small rc=0 ")
    evals = [json.loads(line) for line in (results / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [e["step"] for e in evals] == [20, 40]
    assert json.loads((results / "run.json").read_text())

    results = _run_part("mistral_patching", tmp_path / "mistral")
    status = (results / "status.txt").read_text().splitlines()
    assert [line.split()[0] for line in status] == ["mistral_patching_compare", "mistral_patching_study"]
    assert all(" rc=0 " in line for line in status), status
