"""Figures and ``report.md`` of a patching study, from the arrays and ``summary.json``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HEATMAPS = {
    "head_z": ("head output (hook_z)", "head", "layer"),
    "head_q": ("query (hook_q), per query head", "head", "layer"),
    "head_k": ("key (hook_k), per key/value head", "kv head", "layer"),
    "head_v": ("value (hook_v), per key/value head", "kv head", "layer"),
    "resid": ("residual stream (hook_resid_pre)", "position (last P)", "layer"),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def heatmap(array: np.ndarray, title: str, xlabel: str, ylabel: str, path: Path, xticklabels=None) -> None:
    plt = _pyplot()
    height = max(3.0, 0.18 * array.shape[0] + 1.5)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.22 * array.shape[1] + 2.5), height))
    scale = float(np.nanmax(np.abs(array))) or 1.0
    image = ax.imshow(array, cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto", interpolation="nearest")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_yticks(range(array.shape[0]))  # whole layers and heads, never 0.5
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), xticklabels, rotation=45, ha="right")
    else:
        ax.set_xticks(range(array.shape[1]))
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def layer_bars(series: dict[str, np.ndarray], title: str, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar(np.arange(len(values)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(values)) + 0.4 - width / 2, range(len(values)))  # a group's centre, named by its layer
    ax.set(title=title, xlabel="layer", ylabel="effect")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scatter(exact: np.ndarray, estimate: np.ndarray, title: str, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(exact.ravel(), estimate.ravel(), s=6)
    lo, hi = float(min(exact.min(), estimate.min())), float(max(exact.max(), estimate.max()))
    ax.plot([lo, hi], [lo, hi], color="gray", linewidth=0.5)
    ax.set(title=title, xlabel="exact patching effect", ylabel="attribution estimate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figures(out: Path, effects: dict[str, np.ndarray], attribution: dict[str, np.ndarray], positions: int) -> list[str]:
    """Write the PNGs; returns their file names."""
    names = []
    effects = {name: value for name, value in effects.items() if np.isfinite(value).any()}  # all NaN: undefined, nothing to draw
    for name, (title, xlabel, ylabel) in HEATMAPS.items():
        if name in effects:
            ticks = [f"-{positions - i}" if i < positions - 1 else "last" for i in range(positions)] if name == "resid" else None
            heatmap(effects[name], f"patching effect: {title}", xlabel, ylabel, out / f"{name}.png", ticks)
            names.append(f"{name}.png")
    if "attn_out" in effects and "mlp_out" in effects:
        layer_bars({"attn_out": effects["attn_out"], "mlp_out": effects["mlp_out"]}, "patching effect per layer (last P positions)", out / "layers.png")
        names.append("layers.png")
    if "head_z" in attribution and "head_z" in effects:
        scatter(effects["head_z"], attribution["head_z"], "head_z: attribution vs exact", out / "attribution_head_z.png")
        names.append("attribution_head_z.png")
    return names


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _f(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(summary: dict, images: list[str]) -> str:
    c, ld = summary["config"], summary["logit_difference"]
    kind = ld["effect_kind"]
    parts = [
        "# Mistral patching study",
        "",
        f"Checkpoint `{c['checkpoint']}` ({c['dtype']}), {c['num_pairs']} `{c['pair_kind']}` pairs of {c['shots']}-shot prompts "
        f"(seed {c['seed']}, {summary['prompt']['length']} tokens), patched at the last {c['positions']} positions.",
        "",
        "Metric: LD = logit(clean target) - logit(counterfactual target) at the last position, means over pairs. "
        + (
            "Effect = (LD_patched - LD_clean) / (LD_cf - LD_clean): 0 no effect, 1 a full flip."
            if kind == "normalized"
            else "This pair kind keeps the answer, so effects are raw changes LD_patched - LD_clean in logits "
            "(targets: the correct first token vs the other chain's first token)."
        ),
        "",
        f"Mean LD: clean {_f(ld['clean'])}, counterfactual {_f(ld['counterfactual'])}.",
        "",
    ]
    if not ld.get("effects_defined", True):
        parts += ["**The clean and counterfactual mean LDs are equal: the model does not tell the pairs apart, so the normalised effects are undefined; no sweep is drawn or ranked.**", ""]
    if summary.get("accuracy"):
        parts += ["## Task accuracy (greedy decoding)", ""]
        rows = []
        for role, block in summary["accuracy"].items():
            rows.append([role, "all", block["n"], _f(block["first_token"]), _f(block["exact_match"])])
            rows += [[role, case, b["n"], _f(b["first_token"]), _f(b["exact_match"])] for case, b in block["per_case"].items()]
        parts += [_table(["prompts", "case", "n", "first token", "exact match"], rows), ""]
    parts += ["## Patching sweeps", ""]
    parts += [f"![{name}]({name})" for name in images]
    parts += [""]
    for name, heads in summary["top_heads"].items():
        parts += [f"Top {name}: " + ", ".join(f"({h['layer']}, {h['head']}) {_f(h['effect'])}" for h in heads), ""]
    if summary.get("attribution"):
        a = summary["attribution"]
        parts += [
            f"Attribution patching (head_z, one backward pass) vs the exact sweep: Pearson r = {_f(a['pearson'])}, "
            f"{a['top_k_overlap']} of the exact top {a['top_k']} heads in the attribution's top {a['top_k']}, "
            f"{a['top_k_recall_at_2k']} in its top {2 * a['top_k']}.",
            "",
        ]
    if summary.get("circuit"):
        circuit = summary["circuit"]
        parts += ["## Circuit verification", "", f"Circuit: `{circuit['spec']}`", ""]
        if kind != "normalized":
            parts += ["(This pair kind keeps the answer: LD_clean ~ LD_cf, so the normalised share below is ill-conditioned; read the LDs.)", ""]
        if circuit.get("note"):
            parts += [f"(Note: {circuit['note']}.)", ""]
        rows = [[name, _f(s["ld"]), _f(s["of_clean"]), _f(s["normalized"])] for name, s in circuit["scores"].items()]
        parts += [_table(["heads kept clean", "mean LD", "of the clean LD: LD / LD_clean (the paper's)", "normalised: (LD - LD_cf) / (LD_clean - LD_cf)"], rows), ""]
    if summary.get("attention"):
        parts += ["## Attention of chosen heads (clean prompts, mean over pairs)", ""]
        spans = None
        rows = []
        for head, by_row in summary["attention"].items():
            for row, stats in by_row.items():
                spans = spans or list(stats)
                rows.append([head, row] + [_f(stats[s], 2) for s in spans])
        parts += [_table(["head", "from"] + (spans or []), rows), ""]
    if summary.get("timings"):
        parts += ["## Timings (seconds, compilation included)", ""]
        parts += [_table(["stage", "seconds"], [[k, _f(v, 1)] for k, v in summary["timings"].items()]), ""]
    return "\n".join(parts) + "\n"
