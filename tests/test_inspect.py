"""launch/inspect.py: a written checkpoint read back alone, on fresh problems and on a JSONL file."""

import json
import logging
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from logic_jax.problem import format as fmt
from logic_jax.problem import oracle
from logic_jax.problem.config import ProblemConfig
from logic_jax.problem.records import batch_arrays
from logic_jax.problem.sampler import sample
from logic_jax.train import evaluate as evaluate_lib
from logic_jax.train import curves, inspection, trainer
from logic_jax.train.checkpoint import CheckpointError, member_digests
from train_fixtures import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """8 seeds sharded over 8 devices, checkpoints at 10 and 20."""
    workdir = tmp_path_factory.mktemp("run")
    result = trainer.train(tiny_config(num_seeds=8, num_devices=8, eval_every=10), str(workdir))
    return str(workdir), result


def _problems_file(path, n=24):
    batch = jax.device_get(sample(jax.random.PRNGKey(7), ProblemConfig(depth=2), n))
    c = fmt.context_len(2)
    with open(path, "w") as f:
        for tokens, mask in zip(batch.tokens, batch.answer_mask):
            f.write(json.dumps(dict(context=tokens[:c].tolist(), answer=tokens[mask].tolist(), text="ignored")) + "\n")
    return str(path)


def _cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one CPU device: not the writer's 8
    out = subprocess.run([sys.executable, os.path.join(REPO, "launch", "inspect.py"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return out


def test_inspect_json_on_one_device_reads_an_eight_device_checkpoint(run, tmp_path):
    workdir, result = run
    problems = _problems_file(tmp_path / "problems.jsonl")
    out = _cli(f"--workdir={workdir}", f"--problems={problems}", "--format=json")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["step"] == 20 and report["num_seeds"] == 8 and report["param_count"] > 0
    assert report["config"]["model"]["d_model"] == 16 and report["problems"]["n"] == 24
    params = jax.tree.map(np.asarray, result.state.params)
    assert [s["params_sha256"] for s in report["seeds"]] == member_digests(params)
    # The same numbers as evaluating in this process.
    records = [json.loads(l) for l in open(problems)]
    expected_cases = [oracle.case_of(r["context"]) for r in records]
    first = report["seeds"][0]["evaluation"]
    assert sum(first["case_count"].values()) == 24
    assert first["case_count"]["linear"] == expected_cases.count(0)
    from logic_jax.train import config as config_lib

    config = tiny_config(num_seeds=8)
    evaluate = evaluate_lib.make_evaluate(config_lib.model_config(config), fmt.context_len(2), None, batch=24)
    here = evaluate(params, evaluate_lib.problems_from_records(records, 2))
    assert [s["evaluation"]["exact"] for s in report["seeds"]] == [m["exact"] for m in here]
    assert [s["evaluation"]["errors"] for s in report["seeds"]] == [m["errors"] for m in here]


def test_inspect_text_fresh_problems_and_step(run, caplog):
    workdir, result = run
    with caplog.at_level(logging.WARNING):
        report = inspection.inspect_run(workdir, step=10, num_problems=16)
    assert not [r.getMessage() for r in caplog.records if "read only" in r.getMessage()]  # orbax's, for every reader
    assert report["step"] == 10 and report["problems"] == dict(kind="fresh", n=16, note=report["problems"]["note"])
    text = inspection.format_text(report)
    assert "step        10" in text and "OR TT" in text and len(text.splitlines()) == 10 + 8
    assert report["seeds"][3]["trainer_eval"]["step"] == 10
    assert [s["first_perfect_step"] for s in report["seeds"]] == [None] * 8  # 0% after 10 steps
    report["seeds"][2]["first_perfect_step"] = 300  # as if seed 2 had reached 100% at step 300
    rows = inspection.format_text(report).splitlines()[-8:]
    assert rows[2].split()[:3] == ["2", format(report["seeds"][2]["train_loss"], ".4f"), "300"] and rows[1].split()[2] == "-"
    # The default is the newest checkpoint, evaluated on the trainer's held-out problems.
    newest = inspection.inspect_run(workdir)
    assert newest["step"] == 20
    assert [s["evaluation"] for s in newest["seeds"]] == result.evals[-1][1]  # every number, not just exact (0 at step 20)


def test_inspect_errors(run, tmp_path):
    workdir, _ = run
    with pytest.raises(CheckpointError, match="no such workdir"):
        inspection.inspect_run(str(tmp_path / "missing"))
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="holds no checkpoints"):
        inspection.inspect_run(str(tmp_path / "empty"))
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"sweep is a sweep: its runs are its groups, .*sweep/groups/g0"):
        inspection.inspect_run(str(tmp_path / "sweep"))
    with pytest.raises(CheckpointError, match="no checkpoint at step 15"):
        inspection.inspect_run(workdir, step=15)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(dict(context=[1, 2, 3], answer=[fmt.EOS])) + "\n")
    with pytest.raises(evaluate_lib.ProblemsFileError, match=r"bad.jsonl, record 1: context has 3 tokens"):
        inspection.inspect_run(workdir, problems_file=str(bad))
    bad.write_text(json.dumps(dict(answer=[fmt.EOS])) + "\n")
    with pytest.raises(evaluate_lib.ProblemsFileError, match=r"record 1: needs 'context' and 'answer'"):
        inspection.inspect_run(workdir, problems_file=str(bad))
    # The file's answers are the targets of exact match: each must be its context's minimal proof.
    batch = jax.device_get(sample(jax.random.PRNGKey(3), ProblemConfig(depth=2), 2))
    records = []
    for b in range(2):
        n = fmt.context_len(2) + int(batch.answer_len[b])
        records.append(dict(context=batch.tokens[b, : fmt.context_len(2)].tolist(), answer=batch.tokens[b, fmt.context_len(2) : n].tolist()))
    swapped = [dict(context=records[0]["context"], answer=records[1]["answer"])]
    if swapped[0]["answer"] == records[0]["answer"]:
        swapped[0]["answer"] = swapped[0]["answer"][1:]  # the same proof by chance: break it otherwise
    bad.write_text(json.dumps(swapped[0]) + "\n")
    with pytest.raises(evaluate_lib.ProblemsFileError, match=r"bad.jsonl, record 1: the answer is not the minimal proof of its context"):
        inspection.inspect_run(workdir, problems_file=str(bad))
    bad.write_text(json.dumps(dict(records[0], answer=[t + 0.5 for t in records[0]["answer"]])) + "\n")
    with pytest.raises(evaluate_lib.ProblemsFileError, match=r"record 1: needs 'context' and 'answer' as lists of token ids .*is not an integer"):
        inspection.inspect_run(workdir, problems_file=str(bad))
    bad.write_text(json.dumps(dict(records[0], context=[float("inf")] + records[0]["context"][1:])) + "\n")  # "Infinity"
    with pytest.raises(evaluate_lib.ProblemsFileError, match=r"record 1: needs 'context' and 'answer' as lists of token ids .*inf is not an integer"):
        inspection.inspect_run(workdir, problems_file=str(bad))
    bad.write_text(json.dumps(dict(records[0], answer=[float(t) for t in records[0]["answer"]])) + "\n")
    assert inspection.inspect_run(workdir, problems_file=str(bad))["problems"]["n"] == 1  # 5.0 is the id 5
    with pytest.raises(evaluate_lib.ProblemsFileError, match=rf"{re.escape(str(tmp_path))}: cannot read it \(Is a directory\)"):
        inspection.inspect_run(workdir, problems_file=str(tmp_path))
    bad.write_bytes(b"\xff\xfe{}\n")
    with pytest.raises(evaluate_lib.ProblemsFileError, match=rf"{re.escape(str(bad))}: 'utf-8' codec can't decode"):
        inspection.inspect_run(workdir, problems_file=str(bad))
    with pytest.raises(ValueError, match="num_problems must be 1 to 10,000,000, got 0"):
        inspection.inspect_run(workdir, num_problems=0)
    with pytest.raises(ValueError, match="num_problems must be 1 to 10,000,000, got 100,000,000"):
        inspection.inspect_run(workdir, num_problems=10**8)
    out = _cli(f"--workdir={tmp_path / 'missing'}")
    assert out.returncode == 1 and "no such workdir" in out.stderr
    out = _cli(f"--workdir={workdir}", "--num_problems=-1")
    assert out.returncode != 0 and "--num_problems" in out.stderr and "Traceback" not in out.stderr


def test_inspect_reads_the_npz_of_sample_py(run, tmp_path):
    workdir, _ = run
    batch = jax.device_get(sample(jax.random.PRNGKey(7), ProblemConfig(depth=2), 24))  # _problems_file's problems
    npz = tmp_path / "problems.npz"
    with open(npz, "wb") as f:  # as launch/sample.py --format=npz writes it
        np.savez_compressed(f, config=json.dumps(ProblemConfig(depth=2).to_dict()), **batch_arrays(batch))
    from_npz = inspection.inspect_run(workdir, problems_file=str(npz))
    from_jsonl = inspection.inspect_run(workdir, problems_file=_problems_file(tmp_path / "problems.jsonl"))
    assert from_npz["problems"]["n"] == 24
    assert [s["evaluation"] for s in from_npz["seeds"]] == [s["evaluation"] for s in from_jsonl["seeds"]]
    npz.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(evaluate_lib.ProblemsFileError, match=rf"{re.escape(str(npz))}: not a readable npz of launch/sample.py"):
        inspection.inspect_run(workdir, problems_file=str(npz))
    with open(npz, "wb") as f:
        np.savez_compressed(f, tokens=np.asarray(batch.tokens))
    with pytest.raises(evaluate_lib.ProblemsFileError, match=r"not an npz of launch/sample.py \(no answer_mask, config\)"):
        inspection.inspect_run(workdir, problems_file=str(npz))
    with open(npz, "wb") as f:
        np.savez_compressed(f, config=json.dumps(ProblemConfig(depth=2).to_dict()), tokens=np.asarray(batch.tokens), answer_mask=np.asarray(batch.answer_mask)[:, :-1])
    with pytest.raises(evaluate_lib.ProblemsFileError, match=r"tokens \(24, \d+\) and answer_mask \(24, \d+\) must be 2-D arrays of one shape"):
        inspection.inspect_run(workdir, problems_file=str(npz))


def test_inspect_attention_draws_a_png(run, tmp_path):
    workdir, _ = run
    png = tmp_path / "attention.png"
    out = _cli(f"--workdir={workdir}", f"--attention={png}", "--seed=1", "--query=logop")
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    out = _cli(f"--workdir={workdir}", f"--attention={tmp_path / 'x.png'}", "--seed=99")
    assert out.returncode == 1 and "seed" in out.stderr
    out = _cli(f"--workdir={workdir}", f"--attention={tmp_path / 'x.png'}", "--tokens=1,a")
    assert out.returncode != 0 and "--tokens must be comma-separated integer token ids, got '1,a'" in out.stderr and "Traceback" not in out.stderr
    from logic_jax.analysis import common, examples

    with pytest.raises(common.AnalysisError, match=r"token ids must be in 0\.\.\d+, got 1\.\.99999999999"):
        examples.draw_example(workdir, str(tmp_path / "x.png"), tokens=[1, 99999999999])
    no_extension = tmp_path / "attention_plot"
    assert examples.draw_example(workdir, str(no_extension)) == str(no_extension)
    assert no_extension.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (tmp_path / "attention_plot.png").exists()


def test_inspect_curves_draws_the_log(run, tmp_path):
    workdir, _ = run
    png = tmp_path / "curves.png"
    out = _cli(f"--workdir={workdir}", f"--curves={png}")
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    out = _cli(f"--workdir={tmp_path}", f"--curves={png}")
    assert out.returncode == 1 and f"no metrics.jsonl in {tmp_path}" in out.stderr and "Traceback" not in out.stderr
    out = _cli(f"--workdir={workdir}", f"--curves={tmp_path / ('x' * 300)}")  # cannot be written, even by root
    assert out.returncode == 1 and "error: [Errno 36] File name too long" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    no_extension = tmp_path / "curves_plot"
    assert curves.draw_run(workdir, str(no_extension)) == str(no_extension) and no_extension.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


GPU_CHECKPOINT = os.path.join(REPO, "tests", "data", "gpu_checkpoint")


@pytest.mark.skipif(
    not os.path.isdir(GPU_CHECKPOINT),
    reason="no checkpoint written on a GPU in tests/data yet: bench/gpu_check.sh open writes one (gpu_checkpoint/ in its archive)",
)
def test_the_cpu_reads_a_checkpoint_written_on_a_gpu():
    with open(os.path.join(GPU_CHECKPOINT, "inspect_on_gpu.json")) as f:
        on_gpu = json.load(f)  # launch/inspect.py's report, made on the GPU machine right after training
    out = _cli(f"--workdir={GPU_CHECKPOINT}", "--format=json")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["step"] == on_gpu["step"] and report["config"] == on_gpu["config"]
    assert [s["params_sha256"] for s in report["seeds"]] == [s["params_sha256"] for s in on_gpu["seeds"]]
    assert "NVIDIA" in open(os.path.join(GPU_CHECKPOINT, "machine.txt")).read()
