"""Training curves: the log read back as arrays, a line a member, colours by seed or by grid point."""

import json
import os
import shutil
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

from logic_jax.train import curves, trainer
from train_fixtures import tiny_config, write_config_file

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    trainer.train(tiny_config(num_seeds=3, eval_every=10), workdir)
    return workdir


def _records(workdir, kind):
    return [r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if r["kind"] == kind]


def test_read_run_is_the_log_and_each_seed_is_its_own_line(run):
    c = curves.read_run(run)
    train, evals = _records(run, "train"), _records(run, "eval")
    np.testing.assert_array_equal(c.train_step, [10, 20])
    np.testing.assert_array_equal(c.loss, [r["loss"] for r in train])
    np.testing.assert_array_equal(c.eval_step, [r["step"] for r in evals])
    np.testing.assert_array_equal(c.exact, [r["exact"] for r in evals])
    assert c.points == (0, 0, 0)
    assert curves.read_run(os.path.join(run, "checkpoints")).loss.tolist() == c.loss.tolist()  # inspect takes either

    fig = curves.figure([c])
    ax_loss, ax_exact = fig.axes
    assert [line.get_label() for line in ax_loss.lines] == ["seed 0", "seed 1", "seed 2"]
    for m, line in enumerate(ax_loss.lines):
        np.testing.assert_array_equal(line.get_ydata(), c.loss[:, m])
    for m, line in enumerate(ax_exact.get_lines()[: c.exact.shape[1]]):
        np.testing.assert_array_equal(line.get_ydata(), 100 * c.exact[:, m])
    assert len({matplotlib.colors.to_hex(line.get_color()) for line in ax_loss.lines}) == 3


def test_a_sweep_is_coloured_by_grid_point_and_labelled_with_its_overrides():
    steps = np.array([10, 20])
    group0 = curves.Curves(steps, np.ones((2, 4)), steps, np.zeros((2, 4)), points=(0, 0, 1, 1))
    group1 = curves.Curves(steps, np.ones((2, 2)), steps, np.zeros((2, 2)), points=(2, 2))
    fig = curves.figure([group0, group1], {0: "point 0: optim.lr=0.001", 1: "point 1: optim.lr=0.01", 2: "point 2: model.d_model=32"})
    lines = fig.axes[0].lines
    colour = [matplotlib.colors.to_hex(line.get_color()) for line in lines]
    assert colour[0] == colour[1] != colour[2] == colour[3] != colour[4] == colour[5] and colour[0] != colour[4]
    assert [line.get_label() for line in lines if not line.get_label().startswith("_")] == [
        "point 0: optim.lr=0.001", "point 1: optim.lr=0.01", "point 2: model.d_model=32"]


def test_non_finite_losses_are_read_and_drawn(run, tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "run.json").write_text(open(os.path.join(run, "run.json")).read())
    (workdir / "metrics.jsonl").write_text(
        json.dumps(dict(kind="train", step=10, loss=[1.0, "nan", "inf"])) + "\n" + '{"kind": "train", "step": 20, "lo'  # cut by a kill
    )
    c = curves.read_run(str(workdir))
    assert c.loss.shape == (1, 3) and np.isnan(c.loss[0, 1]) and np.isinf(c.loss[0, 2]) and c.eval_step.size == 0
    png = curves.draw_run(str(workdir))
    assert png == str(workdir / "curves.png") and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_errors_name_the_file(run, tmp_path):
    with pytest.raises(curves.CurvesError, match=f"no metrics.jsonl in {tmp_path}"):
        curves.read_run(str(tmp_path))
    (tmp_path / "run.json").write_text(open(os.path.join(run, "run.json")).read())
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(curves.CurvesError, match="metrics.jsonl: no training records yet"):
        curves.read_run(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text(json.dumps(dict(kind="train", step=10, loss=[1.0, 2.0])) + "\n")
    with pytest.raises(curves.CurvesError, match=r"metrics.jsonl: step 10: 'loss' should be a list of 3 numbers"):
        curves.read_run(str(tmp_path))
    with pytest.raises(curves.CurvesError, match="no group of the sweep has logged a step yet"):
        curves.draw_sweep([str(tmp_path / "groups" / "g0")], str(tmp_path / "curves.png"), {})


def test_a_sweep_draws_the_groups_that_logged_while_one_has_not(run, tmp_path):
    """A group still compiling, or diverged in its first chunk, has an empty log: the others draw."""
    groups = tmp_path / "groups"
    for name, log in (("g0", open(os.path.join(run, "metrics.jsonl")).read()), ("g1", "")):
        (groups / name).mkdir(parents=True)
        (groups / name / "run.json").write_text(open(os.path.join(run, "run.json")).read())
        (groups / name / "metrics.jsonl").write_text(log)
    png = curves.draw_sweep([str(groups / "g0"), str(groups / "g1")], str(tmp_path / "curves.png"), {})
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_sweeps_curves_are_titled_by_the_sweep_wherever_they_are_written(run, tmp_path, monkeypatch):
    """inspect --curves=elsewhere.png used to title them by the output file's folder."""
    group = tmp_path / "my_sweep" / "groups" / "g0"
    shutil.copytree(run, group)
    titles = []
    monkeypatch.setattr(curves, "draw", lambda runs, path, labels, title: titles.append(title) or path)
    (tmp_path / "elsewhere").mkdir()
    curves.draw_sweep([str(group)], str(tmp_path / "elsewhere" / "c.png"), {})
    assert titles == ["my_sweep"]


def test_a_log_of_one_training_record_shows_its_point():
    c = curves.Curves(np.array([10]), np.array([[0.5, 0.7]]), np.array([], int), np.zeros((0, 2)), points=(0, 0))
    assert [line.get_marker() for line in curves.figure([c]).axes[0].lines] == [".", "."]


def test_a_machine_without_matplotlib_still_finishes_the_run(tmp_path):
    blocked = tmp_path / "site" / "matplotlib"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('No module named matplotlib (blocked by the test)')\n")
    config_file = write_config_file(tmp_path / "cfg.py", TESTS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", "train.py"), f"--config={config_file}", f"--workdir={tmp_path / 'w'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no curves.png: No module named matplotlib" in proc.stderr and "--curves=FILE.png" in proc.stderr
    assert sorted(os.listdir(tmp_path / "w" / "checkpoints")) == ["10", "20"] and not (tmp_path / "w" / "curves.png").exists()


def test_a_damaged_log_line_costs_only_itself_on_resume(tmp_path):
    from logic_jax.train.metrics import RunLog

    records = [dict(kind="train", step=s, loss=[1.0]) for s in (5, 10, 15)]
    lines = [json.dumps(r) for r in records]
    lines[0] = lines[0][:10]  # damaged in the middle of the file, not only a torn last line
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"kind": "tra')
    with pytest.warns(UserWarning, match=r"metrics.jsonl: skipped unreadable line\(s\) \[1\]"):
        log = RunLog(str(tmp_path), start_step=10, total_steps=20, progress=False)
    log.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [10]
