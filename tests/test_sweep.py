"""Sweeps: grid expansion, grouping by shape, one vmap per group, summary tables."""

import csv
import os
import signal
import subprocess
import sys
import threading
import time

import ml_collections
import numpy as np
import pytest

from logic_jax.train import config as config_lib
from logic_jax.train import inspection, sweep
from logic_jax.train import evaluate as evaluate_lib
from logic_jax.train import trainer
from logic_jax.train.evaluate import steps_to_perfect
from logic_jax.train.state import members_of
from train_fixtures import signal_after, tensorboard_events, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sweep_config(**grid):
    c = tiny_config(num_steps=10, eval_every=10)
    c.sweep = ml_collections.ConfigDict()
    for key, values in grid.items():
        section, name = key.split("__")
        if section not in c.sweep:
            c.sweep[section] = ml_collections.ConfigDict()
        c.sweep[section][name] = values
    return c


def test_grid_points_and_groups():
    c = sweep_config(model__d_model=(16, 32), optim__lr=(1e-3, 1e-2, 3e-2))
    pts = sweep.points(c)
    assert len(pts) == 6
    assert pts[0]["overrides"] == {"model.d_model": 16, "optim.lr": 1e-3}
    groups = sweep.groups(pts)
    assert [[p["index"] for p in g] for g in groups] == [[0, 1, 2], [3, 4, 5]]


def test_grid_errors_name_the_key():
    with pytest.raises(config_lib.ConfigError, match="sweep.model.d_modle"):
        sweep.points(sweep_config(model__d_modle=(16,)))
    with pytest.raises(config_lib.ConfigError, match=r"sweep point 0 .*d_model"):
        sweep.points(sweep_config(model__d_model=(15,)))
    with pytest.raises(config_lib.ConfigError, match="needs a non-empty tuple"):
        sweep.points(sweep_config(optim__lr=()))


def test_sweep_trains_groups_and_matches_single_runs(tmp_path):
    c = sweep_config(optim__lr=(3e-3, 1e-2))
    rows, stopped_by, diverged = sweep.run_sweep(c, str(tmp_path))
    assert stopped_by is None and diverged == []
    assert [r["point"] for r in rows] == [0, 1] and {r["group"] for r in rows} == {0}
    assert os.listdir(tmp_path / "groups") == ["g0"]  # both learning rates in one vmap
    with open(tmp_path / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [float(r["optim.lr"]) for r in table] == [3e-3, 1e-2]
    assert set(table[0]) >= {"exact_mean", "exact_min", "seeds_at_99", "seeds_at_100", "steps_to_100", "wall_time_s", "seeds"}
    assert "| point |" in open(tmp_path / "summary.md").read()
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = subprocess.run([sys.executable, "launch/inspect.py", f"--workdir={tmp_path}", f"--curves={tmp_path / 'again.png'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and (tmp_path / "again.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", out.stderr[-2000:]  # a sweep's root, mid-sweep too
    assert sweep.point_labels(sweep.points(c)) == {0: "point 0: optim.lr=0.003", 1: "point 1: optim.lr=0.01"}
    # Inspecting the group names each member's point, seed and own learning rate; TensorBoard too.
    rows_text = inspection.format_text(inspection.inspect_run(str(tmp_path / "groups" / "g0"), num_problems=8)).splitlines()
    header = next(i for i, line in enumerate(rows_text) if line.startswith("row"))
    assert rows_text[header].split()[:4] == ["row", "point", "seed", "lr"]
    assert [line.split()[:4] for line in rows_text[header + 1:]] == [["0", "0", "0", "0.003"], ["1", "0", "1", "0.003"], ["2", "1", "0", "0.01"], ["3", "1", "1", "0.01"]]
    optim = next(line for line in rows_text if line.startswith("optim"))
    assert '"lr"' not in optim and optim.endswith("; per row: lr")
    tags = {v.tag for event in tensorboard_events(str(tmp_path / "groups" / "g0" / "tensorboard")) for v in event.summary.value}
    assert {"train/loss/point_0/seed_1", "train/loss/point_1/seed_0", "eval/exact/point_1/seed_1"} <= tags and "train/loss/seed_0" not in tags
    # Point 1 of the group equals a plain run of its config.
    point = sweep.points(c)[1]["config"]
    alone = trainer.train(point, str(tmp_path / "alone"))
    group = trainer.train(sweep.points(c)[0]["config"], str(tmp_path / "groups" / "g0"), members=members_of(sweep.points(c)[0]["config"], 0) + members_of(point, 1))
    for x, y in zip(np.asarray(group.state.params["W_E"])[2:], np.asarray(alone.state.params["W_E"])):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    # A rerun with another grid in the same workdir is refused, naming the key.
    with pytest.raises(trainer.RunMismatchError, match=r"sweep.optim.lr"):
        sweep.run_sweep(sweep_config(optim__lr=(3e-3,)), str(tmp_path))


@pytest.mark.slow
def test_launch_sweep_script(tmp_path):
    out = subprocess.run(
        [sys.executable, "launch/sweep.py", "--config=configs/sweep.py", f"--workdir={tmp_path}", "--config.num_steps=20", "--config.optim.decay_steps=20", "--config.eval_size=32", "--config.checkpoint_every=10", "--config.eval_every=10", "--config.steps_per_call=10", "--config.progress=false", "--config.num_devices=1"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| point |" in out.stdout and os.path.exists(tmp_path / "summary.csv")


def test_a_signal_stops_the_sweep_after_the_group_and_a_rerun_finishes_it(tmp_path):
    # Two groups (two widths); SIGTERM once the first group has logged its first chunk.
    c = sweep_config(model__d_model=(16, 32))
    c.num_steps, c.checkpoint_every, c.eval_every = 60, 1000, 30
    log = tmp_path / "groups" / "g0" / "metrics.jsonl"

    def send_when_training():
        deadline = time.time() + 120
        while not (log.exists() and '"train"' in log.read_text()):
            if time.time() > deadline:
                return  # never sent: the asserts below fail, and no stray SIGTERM ends pytest
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the trainer between chunks

    sender = threading.Thread(target=send_when_training)
    sender.start()
    rows, stopped_by, _ = sweep.run_sweep(c, str(tmp_path))
    sender.join()
    assert stopped_by == "SIGTERM"
    assert [r["group"] for r in rows] == [0] and 10 <= rows[0]["step"] < 60
    assert rows[0]["eval_step"] == ((rows[0]["step"] // 30) * 30 or None)  # the numbers' own step, not the stop's
    assert os.listdir(tmp_path / "groups") == ["g0"]  # the second group was not started
    rows, stopped_by, _ = sweep.run_sweep(c, str(tmp_path))
    assert stopped_by is None and [(r["group"], r["step"], r["eval_step"]) for r in rows] == [(0, 60, 60), (1, 60, 60)]
    # A rerun that trains nothing reports the wall time its checkpoints hold, not that plus the rerun's own.
    again, _, _ = sweep.run_sweep(c, str(tmp_path))
    assert [r["wall_time_s"] for r in again] == [r["wall_time_s"] for r in rows]


def test_a_sweep_over_seed_evaluates_each_point_on_its_seeds_held_out_set(tmp_path):
    c = sweep_config()
    c.sweep.seed = (0, 5)  # one group: points differ only in a per-member value
    sweep.run_sweep(c, str(tmp_path))
    group = str(tmp_path / "groups" / "g0")
    logged = trainer.latest_metrics(group)["evals"][-1]["metrics"]  # members: point 0's two seeds, then point 1's
    _, state, run, _ = inspection.load(group)
    model_cfg, problem_cfg = config_lib.model_config(run["config"]), config_lib.problem_config(run["config"])
    evaluate = evaluate_lib.make_evaluate(model_cfg, problem_cfg.context_len, None, batch=32)
    on_seed = {s: evaluate(state.params, evaluate_lib.fresh_problems(trainer.eval_key(s), problem_cfg, 32)) for s in (0, 5)}
    assert logged == on_seed[0][:2] + on_seed[5][2:]  # as plain runs of seed 0 and of seed 5 would evaluate
    assert logged[0]["case_count"] != logged[2]["case_count"]  # two different sets, so the check above can fail
    text = inspection.format_text(inspection.inspect_run(group)).splitlines()
    header = next(i for i, line in enumerate(text) if line.startswith("row"))
    assert text[header].split()[:4] == ["row", "point", "seed", "config_seed"]
    assert [line.split()[3] for line in text[header + 1:]] == ["0", "0", "5", "5"]


def test_a_signal_in_a_groups_last_chunk_still_stops_the_sweep(tmp_path, monkeypatch):
    c = sweep_config(model__d_model=(16, 32))
    monkeypatch.setattr(sweep, "train", signal_after(sweep.train))
    rows, stopped_by, _ = sweep.run_sweep(c, str(tmp_path))
    assert stopped_by == "SIGTERM"
    assert [(r["group"], r["step"]) for r in rows] == [(0, 10)] and os.listdir(tmp_path / "groups") == ["g0"]


def test_a_diverging_group_is_reported_and_the_other_groups_still_train(tmp_path):
    c = sweep_config(model__init_std=(1e30, 0.02))  # two groups; the first one's loss is not finite
    rows, stopped_by, diverged = sweep.run_sweep(c, str(tmp_path))
    assert stopped_by is None and len(diverged) == 1 and diverged[0].startswith("group 0: non-finite loss")
    assert rows[0]["diverged"].startswith("step ") and rows[0]["exact_mean"] is None
    assert rows[1]["diverged"] is None and rows[1]["step"] == 10 and rows[1]["exact_mean"] is not None
    assert "diverged" in open(tmp_path / "summary.md").read()


def test_diverged_rows_name_the_point_that_diverged(tmp_path):
    c = sweep_config(optim__lr=(3e-3, 1e-2))
    group = sweep.groups(sweep.points(c))[0]
    _, owner = sweep.group_members(group)
    assert owner == [0, 0, 1, 1]
    error = trainer.TrainingDivergedError("non-finite loss", step=7, seeds=[3])
    rows = sweep._diverged_rows(group, owner, 0, str(tmp_path / "never_trained"), error)
    assert [(r["point"], r["diverged"], r["step"]) for r in rows] == [(0, "stopped by point 1", 0), (1, "step 7", 0)]


def test_a_grid_the_devices_cannot_hold_is_refused_before_the_workdir_is_written(tmp_path):
    c = sweep_config(optim__lr=(3e-3, 1e-2, 3e-2))
    c.num_devices = 4  # 3 points x 2 seeds = 6 members: not a multiple of 4
    with pytest.raises(sweep.MeshError, match=r"sweep group 0 trains 3 point\(s\) x num_seeds=2 = 6 members together: num_seeds=6"):
        sweep.run_sweep(c, str(tmp_path / "sweep"))
    assert not (tmp_path / "sweep").exists()  # nothing pinned: the corrected grid may use this workdir


def test_steps_to_100_is_the_first_evaluation_with_every_seed_perfect():
    evals = [(100, [dict(exact=1.0), dict(exact=0.9)]), (200, [dict(exact=0.98), dict(exact=1.0)]), (300, [dict(exact=1.0), dict(exact=1.0)])]
    assert steps_to_perfect(evals, [0, 1]) == 300  # not 200: no seed may slip back
    assert steps_to_perfect(evals, [0]) == 100 and steps_to_perfect(evals[:2], [0, 1]) is None


def test_the_summary_rows_count_the_seeds_that_reach_99_and_100_percent():
    group = [dict(index=0, overrides={"optim.lr": 1e-3}), dict(index=1, overrides={"optim.lr": 3e-3})]
    owner = [0, 0, 0, 1, 1, 1]  # three seeds a point
    last = [dict(exact=e, first_token=1.0) for e in (1.0, 0.995, 0.5, 0.98, 1.0, 1.0)]
    rows = sweep._rows(group, owner, 0, 200, [(100, [dict(exact=0.0, first_token=0.0)] * 6), (200, last)], 9.0)
    assert [(r["seeds_at_99"], r["seeds_at_100"]) for r in rows] == [(2, 1), (2, 2)]
    assert [r["exact_min"] for r in rows] == [0.5, 0.98] and [r["steps_to_100"] for r in rows] == [None, None]
    unevaluated = sweep._rows(group, owner, 0, 200, [], 9.0)  # stopped before its first evaluation
    assert unevaluated[0]["seeds_at_99"] is None and unevaluated[0]["seeds_at_100"] is None


def test_the_summary_table_never_rounds_a_seed_short_of_100_percent_up_to_1():
    row = dict(point=0, **{"optim.lr": 0.001}, step=100, exact_mean=1.0, exact_min=32767 / 32768, steps_to_100=None, wall_time_s=12.3456)
    line = sweep.summary_markdown([row]).splitlines()[2]
    assert line == "| 0 | 0.001 | 100 | 1.0000 | 0.9999 | - | 12.35 |"
