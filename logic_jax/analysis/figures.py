"""The analysis figures, drawn with matplotlib's object API (no pyplot state, any backend).

Every function takes arrays and a path and writes one PNG; none reads a model.
``draw_attention(pattern, tokens, path, title)`` is the one ``launch/inspect.py --attention``
uses.
"""

from __future__ import annotations

import os
import textwrap
from typing import Mapping, Sequence

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from logic_jax.analysis.common import AnalysisError, token_labels
from logic_jax.train.files import image_format

DPI = 90


def _save(fig: Figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI, format=image_format(path))  # constrained layout already fits the labels
    return path


def _grid(rows: int, cols: int, w: float, h: float, **kw):
    fig = Figure(figsize=(w * cols, h * rows), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False, **kw))
    return fig, axes


def draw_attention(pattern: np.ndarray, tokens: Sequence[int], path: str, title: str = "") -> str:
    """Attention of every layer and head on one problem: ``pattern [layers, heads, q, k]``.

    Rows are layers (the paper's 1-indexed names and blocks.i), columns heads; each panel is
    query position (rows) x key position (columns), labelled with the problem's tokens.
    """
    pattern = np.asarray(pattern)
    if pattern.ndim != 4 or pattern.shape[2] != pattern.shape[3]:
        raise AnalysisError(f"draw_attention: pattern must be [layers, heads, q, k] with q == k, got shape {pattern.shape}")
    if len(tokens) != pattern.shape[-1]:
        raise AnalysisError(f"draw_attention: {len(tokens)} tokens for a pattern over {pattern.shape[-1]} positions")
    layers, heads, n, _ = pattern.shape
    labels = token_labels(tokens)
    size = max(2.6, 0.13 * n)  # ~one 6-point label per row
    fig, axes = _grid(layers, heads, size, size)
    fs = 6
    for i in range(layers):
        for h in range(heads):
            ax = axes[i, h]
            im = ax.imshow(pattern[i, h], cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
            # Token labels on the outer panels only (text layout is most of the drawing time).
            ax.set_xticks(range(n), labels if i == layers - 1 else [], rotation=90, fontsize=fs)
            ax.set_yticks(range(n), labels if h == 0 else [], fontsize=fs)
            ax.set_title(f"layer {i + 1} (blocks.{i}) head {h}", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.6, label="attention")
    if title:
        _suptitle(fig, title, 10)
    return _save(fig, path)


def _suptitle(fig: Figure, title: str, fontsize: int = 11) -> None:
    """A title wrapped to the figure's width (constrained layout does not wrap or shrink it)."""
    width = max(16, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))  # characters per line
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.split("\n")), fontsize=fontsize)


def draw_answer_rows(rows: np.ndarray, tokens: Sequence[int], path: str, title: str = "") -> str:
    """Attention from the last position (ANSWER) only, ``rows [layers, heads, k]``: one compact heatmap."""
    rows = np.asarray(rows)
    layers, heads, n = rows.shape
    fig = Figure(figsize=(max(6.0, 0.22 * n), 0.35 * layers * heads + 1.2), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(rows.reshape(layers * heads, n), cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n), token_labels(tokens), rotation=90, fontsize=7)
    ax.set_yticks(range(layers * heads), [f"L{i + 1} h{h}" for i in range(layers) for h in range(heads)], fontsize=7)
    for i in range(1, layers):
        ax.axhline(i * heads - 0.5, color="k", lw=0.6)
    fig.colorbar(im, ax=ax, label="attention from ANSWER")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def draw_cosine(matrices: Sequence[np.ndarray], bounds: Sequence[Sequence[int]], path: str, titles: Sequence[str], title: str = "") -> str:
    """Cosine-similarity matrices, one panel per seed, rows sorted linear | LogOp-OR | LogOp-AND.

    ``bounds[i]`` are the group sizes of panel ``i`` (lines and labels mark the groups).
    """
    n = len(matrices)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = _grid(rows, cols, 3.3, 3.3)
    names = ("linear", "OR", "AND")
    for i, (m, sizes) in enumerate(zip(matrices, bounds)):
        ax = axes[i // cols, i % cols]
        im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        edges = np.cumsum([0] + list(sizes))
        for e in edges[1:-1]:
            ax.axhline(e - 0.5, color="k", lw=0.7)
            ax.axvline(e - 0.5, color="k", lw=0.7)
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        shown = [(c, nm) for c, nm, s in zip(centers, names, sizes) if s]
        ax.set_xticks([c for c, _ in shown], [nm for _, nm in shown], fontsize=8)
        ax.set_yticks([c for c, _ in shown], [nm for _, nm in shown], fontsize=8)
        ax.set_title(titles[i], fontsize=9)
    for j in range(n, rows * cols):
        axes[j // cols, j % cols].axis("off")
    fig.colorbar(im, ax=axes, shrink=0.7, label="cosine similarity")
    if title:
        _suptitle(fig, title)
    return _save(fig, path)


def _annotate(ax, im, values: np.ndarray, fmt: str = "{:.2f}", fontsize: int = 7) -> None:
    """Write each value on its cell, white on dark colours."""
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            r, g, b, _ = im.cmap(im.norm(v))
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=fontsize, color="w" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "k")


def draw_layer_head(maps: Mapping[str, Sequence[np.ndarray]], path: str, col_titles: Sequence[str], title: str = "", diverging: bool = True, label: str = "") -> str:
    """Rows of ``[layers, heads]`` heatmaps, one row per entry of ``maps``, one column per seed."""
    names = list(maps)
    cols = max(len(v) for v in maps.values())
    layers, heads = np.shape(maps[names[0]][0])
    fig, axes = _grid(len(names), cols, 0.55 * heads + 1.3, 0.45 * layers + 0.9)
    for r, name in enumerate(names):
        row = [np.asarray(m, np.float64) for m in maps[name]]
        finite = np.concatenate([np.abs(m[np.isfinite(m)]) for m in row] + [np.zeros(0)])
        lim = max(1.0, float(finite.max()) if finite.size else 1.0)  # one scale a row: the row's colour bar fits every seed
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(row):
                ax.axis("off")
                continue
            m = row[c]
            shown = np.where(np.isfinite(m), m, np.nan)
            if diverging:
                im = ax.imshow(shown, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), interpolation="nearest")
            else:
                im = ax.imshow(shown, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            _annotate(ax, im, m)
            ax.set_xticks(range(heads), [f"h{h}" for h in range(heads)], fontsize=7)
            ax.set_yticks(range(layers), [f"L{i + 1}" for i in range(layers)], fontsize=7)
            if r == 0:
                ax.set_title(col_titles[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
        fig.colorbar(im, ax=list(axes[r]), shrink=0.8, label=label)
    if title:
        _suptitle(fig, title)
    return _save(fig, path)


def draw_layer_pos(maps: Mapping[str, np.ndarray], labels: Mapping[str, Sequence[str]], path: str, title: str = "", label: str = "") -> str:
    """One ``[layers, positions]`` heatmap per entry (rows), x-axis labelled with ``labels[name]``."""
    names = list(maps)
    layers, n = np.shape(maps[names[0]])
    fig, axes = _grid(len(names), 1, max(6.0, 0.24 * n), 0.4 * layers + 1.3)
    for r, name in enumerate(names):
        ax = axes[r, 0]
        m = np.asarray(maps[name], np.float64)
        lim = max(1.0, float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0)
        im = ax.imshow(m, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), aspect="auto", interpolation="nearest")
        ax.set_xticks(range(n), labels[name], rotation=90, fontsize=7)
        ax.set_yticks(range(layers), [f"L{i + 1}" for i in range(layers)], fontsize=7)
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, label=label)
    if title:
        _suptitle(fig, title)
    return _save(fig, path)


def draw_probes(accuracy: Mapping[str, np.ndarray], stages: Sequence[str], positions: Sequence[str], path: str, highlight: str | None = None, title: str = "", seed_names: Sequence[str] | None = None) -> str:
    """Probe test accuracy: per query type a ``[stages, positions]`` heatmap (mean over seeds),
    and accuracy at QUERY by stage, one line per seed (``accuracy[name]``: ``[seeds, stages, positions]``)."""
    names = list(accuracy)
    fig = Figure(figsize=(3.2 * len(names) + 4.5, 0.32 * len(stages) + 1.8), layout="constrained")
    axes = fig.subplots(1, len(names) + 1, squeeze=False)[0]
    for ax, name in zip(axes, names):
        m = np.asarray(accuracy[name]).mean(0)
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        _annotate(ax, im, m, fontsize=6)
        ax.set_xticks(range(len(positions)), positions, fontsize=7)
        ax.set_yticks(range(len(stages)), stages, fontsize=7)
        ax.set_title(f"{name} queries (mean of {len(accuracy[name])} seed(s))", fontsize=9)
        if highlight in stages:
            ax.add_patch(_box(stages.index(highlight), 0))
    fig.colorbar(im, ax=list(axes[:-1]), shrink=0.8, label="probe test accuracy")
    ax = axes[-1]
    x = np.arange(len(stages))
    for name, style in zip(names, ("-", "--", ":")):
        seeds = np.asarray(accuracy[name])
        labels = list(seed_names or [f"seed {s}" for s in range(len(seeds))])
        for s, acc in enumerate(seeds):
            ax.plot(x, acc[:, 0], style, marker="o", ms=3, color=f"C{s}", label=f"{name}, {labels[s]}" if len(seeds) <= 4 else (name if s == 0 else None))
    ax.axhline(1 / 26, color="gray", lw=0.7, ls=":")
    ax.set_xticks(x, stages, rotation=45, fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=6)
    ax.set_title("at QUERY, by stage (dotted: chance)", fontsize=9)
    if title:
        _suptitle(fig, title)
    return _save(fig, path)


def _box(row: int, col: int):
    from matplotlib.patches import Rectangle

    return Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5)


def draw_regions(regions: Mapping[str, np.ndarray], region_names: Sequence[str], path: str, title: str = "", seed_names: Sequence[str] | None = None) -> str:
    """Attention mass from ANSWER per region: per query type a ``[seeds x heads, regions]`` heatmap."""
    names = list(regions)
    seeds, heads, _ = np.shape(regions[names[0]])
    seed_names = list(seed_names or [f"seed {s}" for s in range(seeds)])
    fig, axes = _grid(1, len(names), 0.7 * len(region_names) + 1.5, 0.3 * seeds * heads + 1.4)
    for ax, name in zip(axes[0], names):
        m = np.asarray(regions[name]).reshape(seeds * heads, -1)
        im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        _annotate(ax, im, m, fontsize=6)
        ax.set_xticks(range(len(region_names)), region_names, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(seeds * heads), [f"{seed_names[s]} h{h}" for s in range(seeds) for h in range(heads)], fontsize=6)
        for s in range(1, seeds):
            ax.axhline(s * heads - 0.5, color="k", lw=0.6)
        ax.set_title(f"{name} queries", fontsize=9)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="attention mass")
    if title:
        _suptitle(fig, title)
    return _save(fig, path)


def draw_route_patch(bars: Mapping[str, Mapping[str, np.ndarray]], path: str, title: str = "", seed_names: Sequence[str] | None = None) -> str:
    """Grouped bars per seed, one panel per direction: ``bars[direction][label]`` is ``[seeds]`` in [0, 1]."""
    names = list(bars)
    fig, axes = _grid(1, len(names), 4.2, 3.0)
    for ax, name in zip(axes[0], names):
        labels = list(bars[name])
        seeds = len(bars[name][labels[0]])
        width = 0.8 / len(labels)
        x = np.arange(seeds)
        for i, label in enumerate(labels):
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, bars[name][label], width, label=label, color=f"C{i}")
        ax.set_xticks(x, list(seed_names or [f"seed {s}" for s in range(seeds)]), fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(name, fontsize=9)
    axes[0, -1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if title:
        _suptitle(fig, title)
    return _save(fig, path)


def draw_sweep_claims(values: Mapping[str, Sequence[Sequence[float | None]]], checks: Mapping[str, Sequence | None], point_names: Sequence[str],
                      path: str, title: str = "", fractions: Sequence[str] = ()) -> str:
    """One panel a headline quantity: ``values[key][p]`` are point p's per-seed values (None: missing).

    Seeds are dots, the mean over seeds a bar; ``checks[key]`` = (op, threshold) draws the paper's
    bound as a dashed line; the keys in ``fractions`` share the y range 0..1.
    """
    keys = list(values)
    if not keys:
        raise AnalysisError("draw_sweep_claims: no quantities to draw")
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    n = len(point_names)
    fig, axes = _grid(rows, cols, max(2.8, 0.45 * n + 1.2), 2.6)
    x = np.arange(n)
    for ax, key in zip(axes.flat, keys):
        for p, seeds in enumerate(values[key]):
            ys = np.asarray([v for v in seeds if v is not None and np.isfinite(v)], np.float64)
            if ys.size:
                jitter = np.linspace(-0.15, 0.15, ys.size) if ys.size > 1 else np.zeros(1)
                ax.scatter(p + jitter, ys, s=12, color=f"C{p % 10}", alpha=0.8, zorder=3)
                ax.hlines(ys.mean(), p - 0.3, p + 0.3, color="k", lw=1.5, zorder=4)
        check = checks.get(key)
        if check and check[0] in (">", ">=", "<"):  # ("=", label) has no line to draw
            ax.axhline(check[1], color="gray", lw=0.8, ls="--", zorder=1)
        if key in fractions:
            ax.set_ylim(-0.04, 1.04)
        ax.set_title(key, fontsize=9)
        ax.set_xticks(x, [str(p) for p in range(n)], fontsize=7)
        ax.set_xlim(-0.6, n - 0.4)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    legend = "\n".join(point_names)
    fig.supxlabel(legend, fontsize=7, ha="left", x=0.01)
    if title:
        _suptitle(fig, title, 10)
    return _save(fig, path)
