"""The claims across a sweep's grid points: the same analysis at other widths, depths, rates and seeds.

``analyze_sweep(workdir, out)`` runs ``pipeline.analyze`` on every group of a
``launch/sweep.py`` workdir (``groups/g<k>``, reports into ``out/g<k>/``), then compares the
headline rows of the report (``report.Row.key``) across grid points: per point, the mean and
minimum over its seeds and how many seeds meet the paper's bound. It writes ``report.md``,
``summary.csv`` (one row a point), ``summary.json`` and ``claims.png`` into ``out``. Groups the
sweep has not trained yet (no checkpoint) are listed, not analysed.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

from logic_jax.analysis import common, figures, pipeline
from logic_jax.analysis.report import Row, percent
from logic_jax.train import sweep as sweep_lib
from logic_jax.train.checkpoint import CheckpointError
from logic_jax.train.files import SWEEP_FILE, DamagedFileError, read_json


def headline_rows(summary: dict) -> list[dict]:
    """The rows of one analysis summary that carry a ``key``, each with its table's title."""
    return [dict(row, table=t["title"]) for t in summary["tables"] for row in t["rows"] if "key" in row]


def _bound(row: dict) -> tuple | None:
    """A summary row's (op, threshold): the paper's bound, without the group's counts."""
    return (row["check"]["op"], row["check"]["threshold"]) if "check" in row else None


def point_rows(pts: list[dict], group_of: dict[int, int], summaries: dict[int, dict]) -> list[dict]:
    """One dict a grid point: its overrides, group, step, seeds and every headline row's statistics.

    ``summaries`` maps a group to its analysis summary; a point whose group has none gets
    ``step`` None and no statistics.
    """
    out = []
    for p in pts:
        g = group_of[p["index"]]
        row: dict[str, Any] = dict(point=p["index"], **p["overrides"], group=g)
        summary = summaries.get(g)
        if summary is None:
            out.append(dict(row, step=None, seeds=0, stats={}))
            continue
        mine = [i for i, m in enumerate(summary["meta"]["members"]) if int(m.get("point", 0)) == p["index"]]
        stats = {}
        for h in headline_rows(summary):
            d = Row(h["name"], h["paper"], [h["values"][i] for i in mine], h["kind"], _bound(h)).to_dict()
            stats[h["key"]] = dict(kind=h["kind"], values=d["values"], mean=d.get("mean"), min=d.get("min"), max=d.get("max"),
                                   met=d["check"]["met"] if "check" in d else None)
        out.append(dict(row, step=summary["meta"]["step"], seeds=len(mine), stats=stats))
    return out


def analyze_sweep(workdir: str, out_dir: str, settings: common.Settings = common.Settings(), step: int | None = None, progress: bool = True) -> dict:
    """Analyse every trained group of the sweep in ``workdir``; write the cross-point report to ``out_dir``."""
    common.check_out_dir(workdir, out_dir)
    path = os.path.join(workdir, SWEEP_FILE)
    try:
        config = read_json(path)
    except (OSError, DamagedFileError) as e:
        raise common.AnalysisError(f"{path}: cannot read the sweep's config ({e})") from None
    pts = sweep_lib.points(config)
    group_of = {p["index"]: g for g, group in enumerate(sweep_lib.groups(pts)) for p in group}
    summaries, skipped = {}, {}
    num_groups = len(set(group_of.values()))
    for g in range(num_groups):
        group_dir = os.path.join(workdir, "groups", f"g{g}")
        if not os.path.isdir(group_dir):
            skipped[g] = "not trained yet"
            continue
        if progress:
            print(f"group {g + 1}/{num_groups}: {group_dir}", flush=True)
        try:
            summaries[g] = pipeline.analyze(group_dir, os.path.join(out_dir, f"g{g}"), None, settings, step, progress)
        except CheckpointError as e:
            skipped[g] = str(e)
    if not summaries:
        raise common.AnalysisError(f"sweep {workdir}: no group has a checkpoint to analyse ({'; '.join(f'g{g}: {why}' for g, why in skipped.items())})")
    rows = point_rows(pts, group_of, summaries)
    legend = {h["key"]: dict(table=h["table"], name=h["name"], paper=h["paper"], kind=h["kind"], check=_bound(h))
              for s in summaries.values() for h in headline_rows(s)}
    labels = sweep_lib.point_labels(pts)
    os.makedirs(out_dir, exist_ok=True)
    claims = figures.draw_sweep_claims(
        {key: [r["stats"].get(key, {}).get("values", []) for r in rows] for key, h in legend.items() if h["kind"] != "label"},
        {key: h["check"] for key, h in legend.items()}, [labels[r["point"]] for r in rows], os.path.join(out_dir, "claims.png"),
        f"headline numbers per grid point (one dot a seed; {os.path.abspath(workdir)})", [key for key, h in legend.items() if h["kind"] == "pct"],
    )
    files = {"claims": os.path.basename(claims)}
    summary = common.to_json(dict(
        workdir=os.path.abspath(workdir), points=rows, legend=legend, skipped_groups={f"g{g}": why for g, why in skipped.items()},
        groups={f"g{g}": f"g{g}/summary.json" for g in summaries}, figures=files,
    ))
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    write_csv(rows, legend, os.path.join(out_dir, "summary.csv"))
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown(summary))
    return summary


def _columns(rows: list[dict]) -> list[str]:
    """The point, its overrides, group, step and seeds (the overrides' keys in grid order)."""
    return [k for k in rows[0] if k != "stats"]


def write_csv(rows: list[dict], legend: dict, path: str) -> None:
    leading = _columns(rows)
    fields = list(leading)
    for key, h in legend.items():
        fields += [f"{key}_met"] if h["kind"] == "label" else [f"{key}_mean", f"{key}_min"] + ([f"{key}_met"] if h["check"] else [])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            line = {k: "" if r[k] is None else r[k] for k in leading}
            for key in legend:
                for stat in ("mean", "min", "met"):
                    if f"{key}_{stat}" in fields:
                        v = r["stats"].get(key, {}).get(stat)
                        line[f"{key}_{stat}"] = "" if v is None else v
            writer.writerow(line)


def _cell(stat: dict | None, h: dict) -> str:
    if not stat:
        return "-"
    met = f" [{stat['met']}/{len(stat['values'])}]" if stat.get("met") is not None else ""
    if h["kind"] == "label":
        return met.strip(" []") or "-"
    if stat["mean"] is None:
        return "n/a" + met
    f = percent if h["kind"] == "pct" else (lambda v: f"{v:.3f}")  # noqa: E731
    return f"{f(stat['mean'])} (min {f(stat['min'])}){met}"


def markdown(summary: dict) -> str:
    rows, legend = summary["points"], summary["legend"]
    lines = [
        "# The claims across the sweep's grid points",
        "",
        f"Sweep `{summary['workdir']}`. Each cell: the mean over the point's seeds (min over seeds), and [seeds within the paper's "
        "bound / seeds] where the paper gives one. Each group's full report, seed by seed, is in `g<k>/report.md`.",
        "",
    ]
    head = _columns(rows) + list(legend)
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ["-" if r[c] is None else str(r[c]) for c in _columns(rows)]
        cells += [_cell(r["stats"].get(key), h) for key, h in legend.items()]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| column | table | quantity | paper |", "|---|---|---|---|"]
    lines += [f"| {key} | {h['table']} | {h['name']} | {h['paper']} |" for key, h in legend.items()]
    if summary["skipped_groups"]:
        lines += ["", "Not analysed: " + "; ".join(f"{g}: {why}" for g, why in summary["skipped_groups"].items()) + "."]
    lines += ["", "![claims](claims.png)", ""]
    return "\n".join(lines)
