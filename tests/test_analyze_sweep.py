"""launch/analyze.py on a sweep: every group analysed, the headline rows compared per grid point."""

import csv
import json
import os
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from logic_jax.analysis import common, pipeline
from logic_jax.analysis import sweep as sweep_analysis
from logic_jax.train import sweep
from train_fixtures import signal_after, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = dict(n_accuracy=32, n_attention=32, n_routing=24, n_probe_train=52, n_probe_test=26, probe_steps=20, n_patch=8)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """2 learning rates x 2 widths, 2 seeds each: groups g0 (width 16) and g1 (width 24), the
    sweep stopped (a SIGTERM) after g0."""
    c = tiny_config(num_steps=10, checkpoint_every=10)
    c.model.update(n_layers=2)
    c.sweep = ml_collections.ConfigDict(dict(model=dict(d_model=(16, 24)), optim=dict(lr=(3e-3, 1e-2))))
    workdir = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep, "train", signal_after(sweep.train))
        assert sweep.run_sweep(c, str(workdir))[1] == "SIGTERM"
    assert os.listdir(workdir / "groups") == ["g0"]
    out = workdir / "analysis"
    summary = sweep_analysis.analyze_sweep(str(workdir), str(out), common.Settings(**SIZES), progress=False)
    return workdir, out, summary


def test_each_point_gets_the_numbers_of_its_own_seeds(swept):
    workdir, out, summary = swept
    points = {p["point"]: p for p in summary["points"]}
    assert sorted(points) == [0, 1, 2, 3]
    assert [(p["model.d_model"], p["optim.lr"], p["group"]) for p in summary["points"]] == [(16, 3e-3, 0), (16, 1e-2, 0), (24, 3e-3, 1), (24, 1e-2, 1)]
    # Point 1 is members 2 and 3 of group 0: analysing those seeds of the group alone gives its numbers.
    alone = pipeline.analyze(str(workdir / "groups" / "g0"), str(workdir / "alone"), [2, 3], common.Settings(**SIZES), progress=False)
    rows = {r["key"]: r for t in alone["tables"] for r in t["rows"] if "key" in r}
    assert set(rows) == set(points[1]["stats"]) >= {"exact", "chain_separation", "claim3_linear", "claim3_both", "linear_probe", "lookup_copy"}
    for key, row in rows.items():
        assert points[1]["stats"][key]["values"] == row["values"], key
        if "check" in row:
            assert points[1]["stats"][key]["met"] == row["check"]["met"], key
    separation = [points[p]["stats"]["chain_separation"]["values"] for p in (0, 1)]
    assert separation[0] != separation[1]  # two points, four different models
    s = points[0]["stats"]["chain_separation"]
    assert s["mean"] == pytest.approx(np.mean(s["values"])) and s["min"] == min(s["values"])
    assert points[0]["seeds"] == points[1]["seeds"] == 2 and points[0]["step"] == 10
    # The group's report says which point and seed each column is; one point's seeds alone need no such line.
    group_report = (out / "g0" / "report.md").read_text()
    assert ("each column 'seed k' (and each figure's) is the group's member k: seed 0 = point 0 seed 0 (optim.lr=0.003); "
            "seed 1 = point 0 seed 1 (optim.lr=0.003); seed 2 = point 1 seed 0 (optim.lr=0.01); seed 3 = point 1 seed 1 (optim.lr=0.01).") in group_report
    assert "A sweep group" not in (workdir / "alone" / "report.md").read_text()


def test_untrained_groups_are_listed_and_the_files_written(swept):
    workdir, out, summary = swept
    assert summary["skipped_groups"] == {"g1": "not trained yet"}
    assert [p["seeds"] for p in summary["points"]] == [2, 2, 0, 0] and summary["points"][2]["stats"] == {}
    with open(out / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["point"] for r in table] == ["0", "1", "2", "3"]
    assert table[1]["exact_met"] == str(summary["points"][1]["stats"]["exact"]["met"])
    assert float(table[0]["chain_separation_mean"]) == pytest.approx(summary["points"][0]["stats"]["chain_separation"]["mean"])
    assert table[3]["step"] == "" and table[3]["exact_mean"] == ""
    report = (out / "report.md").read_text()
    assert "Not analysed: g1: not trained yet." in report and "| claim3_both |" in report
    assert (out / "claims.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "g0" / "report.md").exists() and not (out / "g1").exists()
    assert json.loads((out / "summary.json").read_text())["groups"] == {"g0": "g0/summary.json"}


def test_the_cli_refuses_seeds_on_a_sweep_and_a_sweep_with_nothing_trained(swept, tmp_path):
    workdir, _, _ = swept
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = lambda *flags: subprocess.run([sys.executable, "launch/analyze.py", f"--workdir={workdir}", f"--out={tmp_path}", *flags],  # noqa: E731
                                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    proc = run("--seeds=0")
    assert proc.returncode == 1 and f"{workdir} is a sweep: --seeds applies to one run" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(workdir / "sweep.json", empty / "sweep.json")
    with pytest.raises(common.AnalysisError, match=r"no group has a checkpoint to analyse \(g0: not trained yet; g1: not trained yet\)"):
        sweep_analysis.analyze_sweep(str(empty), str(tmp_path / "out"), common.Settings(**SIZES), progress=False)
