"""launch/analyze.py end to end on a tiny checkpoint trained inside the test (the trainer's library).

The model is barely trained (accuracy near 0): the test checks that every file and every table
is written and that every number is in its range, not what the numbers are.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from logic_jax.analysis import attention, common, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = ("claim1", "claim2", "claim3", "claim4", "claim5", "lookup", "causal")
FIGURES = (
    "attention_linear", "attention_LogOp", "answer_attention_linear", "answer_attention_LogOp", "reading_regions",
    "routing_cosine", "probes", "route_patch", "patching_heads", "ablation_heads", "lookup_heads", "patching_positions",
)
SIZES = dict(n_accuracy=32, n_attention=32, n_routing=24, n_probe_train=52, n_probe_test=26, probe_steps=20, probe_l2=0.01, n_patch=8)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from logic_jax.train.config import base_config
    from logic_jax.train.trainer import train

    c = base_config()
    c.update(num_seeds=2, num_steps=10, batch_size=16, steps_per_call=10, checkpoint_every=10, eval_every=0, eval_size=16, num_devices=1, progress=False)
    c.problem.depth = 2
    c.model.update(n_layers=3, n_heads=2, d_model=16, d_mlp=32)
    c.optim.update(lr=1e-2, warmup_steps=2, decay_steps=10)
    path = str(tmp_path_factory.mktemp("run"))
    train(c, path)
    return path


def _check_row(table_id, row):
    values = [v for v in row["values"] if v is not None]
    if row["kind"] == "label":
        assert all(isinstance(v, str) and v for v in row["values"]), (table_id, row)
        return
    assert all(isinstance(v, float) and np.isfinite(v) for v in values), (table_id, row)
    if row["kind"] == "pct":
        assert all(0.0 <= v <= 1.0 for v in values), (table_id, row)
    elif "silhouette" in row["name"]:
        assert all(-1.0 <= v <= 1.0 for v in values), (table_id, row)
    elif "separation" in row["name"] or "cosine" in row["name"]:
        assert all(-2.0 <= v <= 2.0 for v in values), (table_id, row)
    if values:
        assert row["min"] <= row["mean"] <= row["max"] and row["std"] >= 0


def test_analyze_cli_writes_every_table_and_figure(workdir, tmp_path):
    out = tmp_path / "analysis"
    flags = [f"--{k}={v}" for k, v in SIZES.items()]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "launch/analyze.py", f"--workdir={workdir}", f"--out={out}", "--noprogress", *flags],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stdout
    assert "claim3: both bounds on that head: paper yes, met by " in proc.stdout  # the claim's contrast, per seed

    summary = json.loads((out / "summary.json").read_text())
    exact = summary["tables"][0]["rows"][0]
    assert exact["key"] == "exact" and (exact["check"]["op"], exact["check"]["threshold"]) == (">=", 1.0)  # the paper's 100%, not 99.9%
    assert [t["id"] for t in summary["tables"]] == list(TABLES)
    assert summary["meta"]["seeds"] == [0, 1] and summary["meta"]["layers"] == {"route": 1, "read": 2}
    assert summary["meta"]["settings"]["probe_l2"] == 0.01  # --probe_l2 reaches the probes
    for table in summary["tables"]:
        assert table["rows"]
        for row in table["rows"]:
            assert len(row["values"]) == 2
            _check_row(table["id"], row)
    seed = summary["per_seed"][0]
    assert np.asarray(seed["probes"]["linear"]["test"]).shape == (7, 4)
    assert np.asarray(seed["patching"]["query"]["heads"]).shape == (3, 2)
    assert np.asarray(seed["patching"]["fact"]["positions"]).shape == (3, 26)  # depth 2: 26 context tokens
    assert np.asarray(seed["attention"]["LogOp"]["regions"]).shape == (2, len(attention.REGIONS))
    assert np.asarray(seed["lookup"]["prev_token"]).shape == np.asarray(seed["lookup"]["lookup"]).shape == (3, 2)
    assert seed["lookup"]["reads"] >= SIZES["n_accuracy"]  # every proof restates a fact
    np.testing.assert_allclose(np.asarray(seed["attention"]["linear"]["regions"]).sum(1), 1.0, rtol=1e-4)

    report = (out / "report.md").read_text()
    for table in summary["tables"]:
        assert f"## {table['title']}" in report
    assert "| quantity | paper | seed 0 | seed 1 | mean ± std | min–max | paper met |" in report
    assert "layer 2 (blocks.1)" in report and "layer 3 (blocks.2)" in report
    for name in FIGURES:
        assert summary["figures"][name] == f"{name}.png"
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_analyze_rejects_a_missing_seed(workdir, tmp_path):
    with pytest.raises(common.AnalysisError, match=r"seed index 5 out of range: .* holds seeds 0\.\.1"):
        pipeline.analyze(workdir, str(tmp_path / "x"), seeds=[5], settings=common.Settings(**SIZES), progress=False)
    with pytest.raises(common.AnalysisError, match=r"seed indices \[0, 0\]: each may be given once"):
        pipeline.analyze(workdir, str(tmp_path / "x"), seeds=[0, 0], settings=common.Settings(**SIZES), progress=False)
    with pytest.raises(common.AnalysisError, match=r"is the workdir itself"):
        pipeline.analyze(workdir, workdir + "/", settings=common.Settings(**SIZES), progress=False)
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "analyze.py"), f"--workdir={workdir}", f"--out={in_the_way}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "error:" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_attention_example_of_any_seed(workdir, tmp_path):
    from logic_jax.analysis import examples
    from logic_jax.problem import format as fmt

    pattern, tokens, title = examples.attention_example(workdir, seed=1, query="linear", with_answer=True)
    assert pattern.shape[:2] == (3, 2) and pattern.shape[2:] == (len(tokens), len(tokens)) and len(tokens) > fmt.context_len(2)
    np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-5)
    assert "seed 1" in title and "Rules:" in title
    path = examples.draw_example(workdir, str(tmp_path / "att.png"), seed=0, tokens=tokens[: fmt.context_len(2)])
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(common.AnalysisError, match="seed index 2 out of range"):
        examples.attention_example(workdir, seed=2)
    with pytest.raises(common.AnalysisError, match="token ids must be in"):
        examples.attention_example(workdir, tokens=[0, 99])
