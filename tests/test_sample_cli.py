"""launch/sample.py end to end: JSONL and NPZ output, the same problems as the sampler, bad flags."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from logic_jax.problem import format as fmt
from logic_jax.problem import oracle
from logic_jax.problem.config import ProblemConfig
from logic_jax.problem.records import read_jsonl
from logic_jax.problem.sampler import sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(ROOT, "launch", "sample.py"), *args], capture_output=True, text=True, env=env, timeout=300)


def test_jsonl_on_stdout_is_the_sampler_output():
    proc = run("--num=40", "--seed=5", "--depth=4", "--p_and=0.7", "--shuffle_rules", "--noshuffle_facts")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 40
    cfg = ProblemConfig(depth=4, p_and=0.7, shuffle_rules=True, shuffle_facts=False)
    for i, r in enumerate(records):  # problem i is the one problem sampled from fold_in(key(seed), i)
        expected = jax.device_get(sample(jax.random.fold_in(jax.random.key(5), i), cfg, 1))
        assert r["context"] == expected.tokens[0, : cfg.context_len].tolist()
        assert r["answer"] == oracle.prove(r["context"]) and r["answer"][-1] == fmt.EOS
        assert r["text"] == fmt.render(r["context"], r["answer"])
        assert r["case_name"] == fmt.CASE_NAMES[oracle.case_of(r["context"])]
        assert r["first_answer"] == r["answer"][0]


def test_jsonl_and_npz_files(tmp_path):
    path = tmp_path / "p.jsonl"
    assert run("--num=70000", "--chunk=50000", f"--out={path}").returncode == 0
    problems = read_jsonl(str(path))
    assert len(problems) == 70000
    assert len({tuple(r["context"]) for r in problems}) > 69000  # a key a problem
    npz = tmp_path / "p.problems"
    proc = run("--num=300", "--format=npz", f"--out={npz}", "--depth=2")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["p.jsonl", "p.problems"]  # written as named, no ".npz" added
    data = np.load(npz)
    assert data["tokens"].shape == (300, fmt.seq_len(2))
    assert json.loads(str(data["config"]))["depth"] == 2
    for tokens, mask in zip(data["tokens"], data["answer_mask"]):
        assert oracle.validate(tokens[: fmt.context_len(2)], tokens[mask])


def test_problems_depend_on_seed_and_index_only_not_on_chunk_or_num():
    whole = run("--num=25", "--seed=3", "--shuffle_rules")
    chunked = run("--num=25", "--seed=3", "--shuffle_rules", "--chunk=7")
    shorter = run("--num=10", "--seed=3", "--shuffle_rules", "--chunk=4")
    assert whole.returncode == chunked.returncode == shorter.returncode == 0, whole.stderr + chunked.stderr + shorter.stderr
    assert chunked.stdout == whole.stdout
    assert whole.stdout.splitlines()[:10] == shorter.stdout.splitlines()
    assert len(set(whole.stdout.splitlines())) == 25


def test_bad_flags_name_the_field(tmp_path):
    proc = run("--depth=1")
    assert proc.returncode != 0 and "'depth'" in proc.stderr
    proc = run("--p_logop=1.5")
    assert proc.returncode != 0 and "'p_logop'" in proc.stderr
    proc = run("--format=npz")
    assert proc.returncode != 0 and "--out" in proc.stderr
    proc = run(f"--seed={2**32}")  # jax.random.key(2**32) is key(0): the same problems
    assert proc.returncode != 0 and "--seed" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(f"--out={tmp_path / 'missing' / 'p.jsonl'}")
    assert proc.returncode != 0 and f"no such directory {tmp_path / 'missing'}" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(f"--out={tmp_path}")
    assert proc.returncode != 0 and "is a directory; name a file" in proc.stderr
    for fmt_flag in ("--format=jsonl", "--format=npz"):  # a name too long fails to open, even for root
        proc = run(f"--out={tmp_path / ('x' * 300)}", fmt_flag)
        assert proc.returncode != 0 and "cannot write it (File name too long)" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_read_jsonl_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"context": [1, 2], "answer": [3]}\n\n{"context": [1, 2\n')
    with pytest.raises(ValueError, match=f"{path}, line 3: not JSON"):
        read_jsonl(str(path))
    with pytest.raises(ValueError, match="no such problems file"):
        read_jsonl(str(tmp_path / "missing.jsonl"))
