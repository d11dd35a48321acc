"""Grid sweeps: every point of a grid over config fields, times seeds, in few vmaps.

A sweep config is a trainer config plus ``sweep``: the same nesting as the config, with a
tuple of values at each swept key (``sweep.model.d_model = (32, 64)``). Points whose configs
differ only in per-member values (``seed`` and ``optim.*``: arrays inside the vmapped state)
have the same shapes and train together as one group: one vmap over points x seeds, in
``<workdir>/groups/g<k>``. Each group is an ordinary resumable run.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import math
import os
from typing import Any

import jax
import numpy as np

from logic_jax.train import config as config_lib
from logic_jax.train import curves, preemption
from logic_jax.train.checkpoint import CheckpointError
from logic_jax.train.evaluate import steps_to_perfect
from logic_jax.train.files import SWEEP_FILE, check_workdir_kind, read_json, write_json
from logic_jax.train.preemption import StopRequest
from logic_jax.train.state import members_of
from logic_jax.train.step import MeshError, make_mesh
from logic_jax.train.trainer import RunMismatchError, TrainingDivergedError, latest_metrics, train

# Values that live in each member's state, so points differing only here share a vmap.
PER_MEMBER = ("seed", "num_seeds", "optim.")


def _set(d: dict, key: str, value) -> None:
    *path, last = key.split(".")
    for p in path:
        d = d[p]
    d[last] = value


def grid(config) -> list[tuple[str, tuple]]:
    """The swept keys (sorted) and their values; errors name unknown keys or empty lists."""
    d = config_lib.to_dict(config)
    if "sweep" not in d:
        raise config_lib.ConfigError("a sweep config needs a 'sweep' key (e.g. sweep.optim.lr = (1e-3, 3e-3))")
    known = config_lib.flatten(config_lib.to_dict(config_lib.base_config()))
    out = []
    for key, values in sorted(config_lib.flatten(d["sweep"]).items()):
        if key not in known:
            raise config_lib.ConfigError(f"sweep key 'sweep.{key}': '{key}' is not a config key")
        if not isinstance(values, (list, tuple)) or not values:
            raise config_lib.ConfigError(f"sweep key 'sweep.{key}': needs a non-empty tuple of values, got {values!r}")
        out.append((key, tuple(values)))
    return out


def points(config) -> list[dict[str, Any]]:
    """Every grid point: its overrides and its full (checked) config."""
    keys = grid(config)
    base = config_lib.to_dict(config)
    base.pop("sweep")
    out = []
    for index, values in enumerate(itertools.product(*[v for _, v in keys])):
        overrides = dict(zip([k for k, _ in keys], values))
        point = copy.deepcopy(base)
        for k, v in overrides.items():
            _set(point, k, v)
        try:
            config_lib.check(point)
        except config_lib.ConfigError as e:
            raise config_lib.ConfigError(f"sweep point {index} {overrides}: {e}") from None
        out.append(dict(index=index, overrides=overrides, config=point))
    return out


def shape_key(point_config: dict) -> str:
    flat = config_lib.flatten(point_config)
    return json.dumps({k: v for k, v in sorted(flat.items()) if not k.startswith(PER_MEMBER)})


def groups(pts: list[dict]) -> list[list[dict]]:
    """Points grouped by shape, in order of first appearance."""
    by_key: dict[str, list[dict]] = {}
    for p in pts:
        by_key.setdefault(shape_key(p["config"]), []).append(p)
    return list(by_key.values())


def check_sweep_workdir(workdir: str, config) -> None:
    path = os.path.join(workdir, SWEEP_FILE)
    new = config_lib.to_dict(config)
    check_workdir_kind(workdir, "sweep")
    if os.path.exists(path):
        saved = read_json(path)
        diffs = config_lib.differences(saved, new)
        if diffs:
            raise RunMismatchError(f"workdir {workdir} holds a sweep of another config; differing keys: {'; '.join(diffs)}")
    os.makedirs(workdir, exist_ok=True)
    write_json(path, new)


def point_labels(pts: list[dict]) -> dict[int, str]:
    """``{index: "point 1: optim.lr=0.01"}``: a point's name in figures."""
    return {p["index"]: f"point {p['index']}: " + ", ".join(f"{k}={v}" for k, v in p["overrides"].items()) for p in pts}


def group_members(group: list[dict]) -> tuple[list, list[int]]:
    """The members of a group (its points' seeds, point after point) and the point of each."""
    members, owner = [], []
    for p in group:
        for m in members_of(p["config"], point=p["index"]):
            members.append(m)
            owner.append(p["index"])
    return members, owner


def check_meshes(all_groups: list[list[dict]]) -> None:
    """Every group's members must fill the seed mesh: checked before the sweep's workdir is written."""
    for g, group in enumerate(all_groups):
        members, _ = group_members(group)
        try:
            make_mesh(len(members), group[0]["config"]["num_devices"])
        except MeshError as e:
            per_point = group[0]["config"]["num_seeds"]
            raise MeshError(f"sweep group {g} trains {len(group)} point(s) x num_seeds={per_point} = {len(members)} members together: {e}") from None


def _rows(group: list[dict], owner: list[int], g: int, step: int, evals: list, wall_time: float) -> list[dict]:
    final = evals[-1][1] if evals else None
    rows = []
    for p in group:
        idx = [i for i, o in enumerate(owner) if o == p["index"]]
        exact = [final[i]["exact"] for i in idx] if final else []
        first = [final[i]["first_token"] for i in idx] if final else []
        rows.append(dict(
            point=p["index"],
            **{k: v for k, v in p["overrides"].items()},
            group=g,
            seeds=len(idx),
            step=step,
            eval_step=evals[-1][0] if evals else None,
            exact_mean=float(np.mean(exact)) if exact else None,
            exact_min=float(np.min(exact)) if exact else None,
            # Seeds tend to split into those that learn the task and those left on a plateau: count them.
            seeds_at_99=sum(e >= 0.99 for e in exact) if final else None,
            seeds_at_100=sum(e >= 1.0 for e in exact) if final else None,
            first_token_mean=float(np.mean(first)) if first else None,
            steps_to_100=steps_to_perfect(evals, idx),
            wall_time_s=round(wall_time, 1),
            diverged=None,
        ))
    return rows


def _diverged_rows(group: list[dict], owner: list[int], g: int, group_dir: str, error: TrainingDivergedError) -> list[dict]:
    """A diverged group's rows: its last checkpoint's numbers, and which point went non-finite."""
    culprits = sorted({owner[i] for i in error.seeds})
    try:
        metrics = latest_metrics(group_dir)
        evals = [(e["step"], e["metrics"]) for e in metrics.get("evals", [])]
        step, wall = int(metrics["step"]), float(metrics.get("wall_time", 0.0))
    except CheckpointError:
        evals, step, wall = [], 0, 0.0
    rows = _rows(group, owner, g, step, evals, wall)
    for r in rows:
        r["diverged"] = f"step {error.step}" if r["point"] in culprits or not culprits else f"stopped by point {culprits[0]}"
    return rows


def draw_curves(workdir: str, path: str | None = None) -> str:
    """The curves of the sweep in ``workdir`` (mid-sweep too), from its sweep.json and groups' logs."""
    sweep_file = os.path.join(workdir, SWEEP_FILE)
    try:
        pts = points(read_json(sweep_file))
    except (OSError, ValueError) as e:  # DamagedFileError is a ValueError
        raise curves.CurvesError(f"{sweep_file}: cannot read the sweep's config ({e})") from None
    group_dirs = [os.path.join(workdir, "groups", f"g{g}") for g in range(len(groups(pts)))]
    return curves.draw_sweep(group_dirs, path or os.path.join(workdir, curves.CURVES_FILE), point_labels(pts))


def run_sweep(config, workdir: str, stop: StopRequest | None = None) -> tuple[list[dict], str | None, list[str]]:
    """Train every group (resuming finished or partial ones) and write the summary tables.

    Returns the rows, the signal that stopped the sweep early (None if none did: then the
    groups after it are not started, and rerunning the sweep resumes), and the errors of
    groups that diverged (a NaN or infinite loss stops its group; the other groups still train,
    and the summary's ``diverged`` column names the points). ``stop``: a ``StopRequest`` the
    caller entered (launch/sweep.py, before JAX starts); default: this call's own.
    """
    config_lib.check(config, extra_keys=("sweep",))
    pts = points(config)
    all_groups = groups(pts)
    check_meshes(all_groups)
    check_sweep_workdir(workdir, config)
    rows, stopped_by, diverged = [], None, []
    group_dirs = [os.path.join(workdir, "groups", f"g{g}") for g in range(len(all_groups))]
    # One StopRequest for every group: a signal caught during a group's last chunk still stops the sweep.
    with preemption.caught(stop) as stop:
        for g, group in enumerate(all_groups):
            members, owner = group_members(group)
            try:
                result = train(group[0]["config"], group_dirs[g], members=members, desc=f"group {g + 1}/{len(all_groups)}", stop=stop)
            except TrainingDivergedError as e:
                diverged.append(f"group {g}: {e}")
                rows += _diverged_rows(group, owner, g, group_dirs[g], e)
            else:
                rows += _rows(group, owner, g, result.step, result.evals, result.wall_time)
            if stop.requested():  # also after a group that finished in the chunk the signal came in
                stopped_by = stop.name
                break
    rows.sort(key=lambda r: r["point"])
    write_summary(rows, workdir)
    curves.draw_or_say_why(draw_curves, workdir)
    return rows, stopped_by, diverged


def _cell(v, col: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and col.startswith("exact"):
        return f"{math.floor(v * 1e4) / 1e4:.4f}"  # rounded down: a seed short of 100% never shows 1
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def summary_markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    out = io.StringIO()
    out.write("| " + " | ".join(cols) + " |\n")
    out.write("|" + "|".join(" --- " for _ in cols) + "|\n")
    for r in rows:
        out.write("| " + " | ".join(_cell(r[c], c) for c in cols) + " |\n")
    out.write(
        "\nstep: where the group's training stopped; exact_mean / exact_min: whole-proof exact match over seeds at "
        "the last evaluation (eval_step; the last step unless the sweep was stopped early); seeds_at_99 / seeds_at_100: "
        "how many seeds reach 99% / 100% there; steps_to_100: first "
        "evaluated step where every seed is at 100% ('-': not reached); wall_time_s: the group's time "
        "(points of one group train together); diverged: the step of a non-finite loss, which stops its whole "
        "group (the numbers are then its last checkpoint's).\n"
    )
    return out.getvalue()


def write_summary(rows: list[dict], workdir: str) -> None:
    if jax.process_index() != 0:  # the other processes of a multi-host sweep share its filesystem
        return
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(summary_markdown(rows))
    with open(os.path.join(workdir, "summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
