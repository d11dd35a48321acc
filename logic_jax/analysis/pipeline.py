"""Every analysis on every seed of one checkpoint: the problems, the per-seed loop, the outputs.

``analyze(workdir, out)`` restores the checkpoint (the trainer's ``inspection.load``), draws
one set of problems shared by all seeds, runs claim 1 (all seeds under one vmap) and then
claims 2-5, the fact lookup and the causal tests seed by seed (compiled once, reused across
seeds), and writes ``report.md``, ``summary.json`` and the figures into ``out``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from logic_jax.analysis import accuracy, attention, causal, common, figures, lookup, probes, report, routing
from logic_jax.interp import pairs as pairs_lib
from logic_jax.models import gpt
from logic_jax.problem.config import ProblemConfig
from logic_jax.problem.sampler import Batch

COSINE_SHOWN = 200  # problems per panel of the cosine figure


@dataclasses.dataclass
class Problems:
    """The problems of one analysis run, shared by every seed."""

    accuracy: Any  # train.evaluate.Problems
    attention: dict  # query type -> Batch
    routing: Batch  # half linear, half LogOp
    probe: dict  # query type -> (train Batch, test Batch)
    route_pairs: tuple  # (LogOp-queried, the same problems linear-queried)
    patch_pairs: dict  # pair kind -> (clean, cf)


QUERY_TYPES = (("linear", "linear"), ("LogOp", "logop"))  # (display name, ProblemConfig.fix_query)


def make_problems(problem_cfg: ProblemConfig, settings: common.Settings) -> Problems:
    """Fresh problems for every analysis. One sample per query type, split (the sampler compiles per shape)."""
    key = lambda name: common.analysis_key(settings, name)  # noqa: E731
    s = settings
    half = s.n_routing // 2
    attn, routing_parts, probe = {}, [], {}
    for name, q in QUERY_TYPES:
        n_route = s.n_routing - half if q == "linear" else half
        sizes = (s.n_attention, n_route, s.n_probe_train, s.n_probe_test)
        a, r, train, test = common.split(common.problems(key(f"problems/{q}"), problem_cfg, sum(sizes), query=q), sizes)
        attn[name], probe[name] = a, (train, test)
        routing_parts.append(r)
    logop_cfg = common.pin(problem_cfg, query="logop")
    route_pairs = common.host(pairs_lib.make_pairs(key("route_pairs"), logop_cfg, s.n_patch, "query"))
    # Patching pairs write the chains in one order (the LogOp chain first, unless the run fixed
    # another), so that a position means the same in every pair (the layer x position maps
    # average over pairs); only the fact order still varies.
    fixed_order = problem_cfg.shuffle_rules or problem_cfg.fix_logop_chain_first is not None
    aligned = (lambda c: c) if fixed_order else (lambda c: dataclasses.replace(c, fix_logop_chain_first=True))  # noqa: E731
    patch_pairs = common.host({
        "query": pairs_lib.make_pairs(key("pairs/query"), aligned(problem_cfg), s.n_patch, "query"),
        "fact": pairs_lib.make_pairs(key("pairs/fact"), aligned(logop_cfg), s.n_patch, "fact", differing_only=True),
        "operator": pairs_lib.make_pairs(key("pairs/operator"), aligned(logop_cfg), s.n_patch, "operator", differing_only=True),
    })
    return Problems(
        accuracy=accuracy.held_out(key("accuracy"), problem_cfg, s.n_accuracy),
        attention=attn,
        routing=common.concat(*routing_parts),
        probe=probe,
        route_pairs=route_pairs,
        patch_pairs=patch_pairs,
    )


def analyze_seed(forward, params, model_cfg: gpt.GPTConfig, data: Problems, settings: common.Settings, bar=None) -> dict:
    """Claims 2-5, the fact lookup and the causal tests for one seed's ``params``."""
    route, read = settings.layers(model_cfg.n_layers)
    n_layers = model_cfg.n_layers

    def stage(name):
        if bar is not None:
            bar.set_postfix_str(name)

    out: dict[str, Any] = {}
    stage("attention")
    summaries = {name: attention.summarize(attention.answer_rows(forward, params, b, read, settings.chunk), b) for name, b in data.attention.items()}
    out["attention"] = dict(summaries, claim3=attention.claim3(summaries["linear"], summaries["LogOp"]), claim5=attention.claim5(summaries["LogOp"]))
    examples = {name: common.context(b)[:1] for name, b in data.attention.items()}
    out["examples"] = {name: dict(tokens=np.asarray(t[0]), pattern=attention.patterns(forward, params, t, n_layers)[0]) for name, t in examples.items()}

    stage("fact lookup")
    out["lookup"] = lookup.measure(forward, params, data.accuracy.tokens, data.accuracy.context_len, n_layers, settings.chunk)

    stage("routing")
    vectors = routing.routing_vectors(forward, params, data.routing, route, chunk=settings.chunk)
    q, a = np.asarray(data.routing.query_logop), np.asarray(data.routing.is_and)
    out["routing"] = routing.scores(vectors, q, a)
    order = routing.display_order(q, a, COSINE_SHOWN)
    out["routing_figure"] = dict(
        cosine=routing.cosine_matrix(vectors[order]),
        sizes=[int((~q[order]).sum()), int((q[order] & ~a[order]).sum()), int((q[order] & a[order]).sum())],
    )

    stage("probes")
    out["probes"] = {name: probes.run(forward, params, tr, te, n_layers, settings.probe_steps, settings.probe_l2, settings.chunk) for name, (tr, te) in data.probe.items()}

    stage("routing patch")
    out["route_patch"] = causal.route_patch_both(forward, params, *data.route_pairs, route, read)

    stage("ablation")
    n = settings.n_patch
    subsets = {name: common.take(b, slice(0, n)) for name, b in data.attention.items()}
    reference = common.concat(*subsets.values())
    out["ablation"] = {name: causal.head_ablation(forward, params, b, n_layers, reference) for name, b in subsets.items()}

    stage("patching")
    out["patching"] = {kind: causal.patching_maps(forward, params, clean, cf, n_layers) for kind, (clean, cf) in data.patch_pairs.items()}
    return out


def _position_labels(batch: Batch, problem_cfg: ProblemConfig) -> list[str]:
    """x labels of the layer x position maps: each position's role (shuffled rules: its index only)."""
    n = common.context(batch).shape[1]
    if problem_cfg.shuffle_rules:
        return [str(i) for i in range(n)]
    roles = common.position_roles(problem_cfg.depth, logop_first=problem_cfg.fix_logop_chain_first is not False)
    return [f"{i}:{r}" for i, r in enumerate(roles)]


def draw(out_dir: str, results: list[dict], seeds: list[int], data: Problems, model_cfg: gpt.GPTConfig, problem_cfg: ProblemConfig, settings: common.Settings) -> dict[str, str]:
    """Every figure; returns name -> file name (relative to ``out_dir``)."""
    route, read = settings.layers(model_cfg.n_layers)
    names = [f"seed {s}" for s in seeds]
    files = {}

    def path(name):
        files[name] = f"{name}.png"
        return os.path.join(out_dir, files[name])

    first = results[0]
    for qname, ex in first["examples"].items():
        figures.draw_attention(ex["pattern"], ex["tokens"], path(f"attention_{qname}"), f"{names[0]}: attention on a {qname}-queried problem")
        figures.draw_answer_rows(ex["pattern"][:, :, -1, :], ex["tokens"], path(f"answer_attention_{qname}"), f"{names[0]}: attention from ANSWER, {qname}-queried problem")
    figures.draw_regions(
        {q: np.stack([r["attention"][q]["regions"] for r in results]) for q in ("linear", "LogOp")},
        attention.REGIONS, path("reading_regions"),
        f"{common.layer_name(read)}: attention from ANSWER by region (mean over {settings.n_attention} problems per type)", names,
    )
    figures.draw_cosine(
        [r["routing_figure"]["cosine"] for r in results], [r["routing_figure"]["sizes"] for r in results], path("routing_cosine"), names,
        f"cosine similarity of {common.layer_name(route)} attention output at QUERY",
    )
    figures.draw_probes(
        {q: np.stack([r["probes"][q]["test"] for r in results]) for q in ("linear", "LogOp")},
        results[0]["probes"]["linear"]["stages"], list(probes.POSITIONS), path("probes"), probes.stage_after(route),
        "affine probes for the first answer token (test accuracy)", names,
    )
    def patch_bars(d):
        head = lambda r: r["attention"]["claim3"]["head"]  # noqa: E731
        rp = [r["route_patch"][d] for r in results]
        return {
            "reading head -> QUERY, unpatched": np.array([p["attention_before"][head(r)] for p, r in zip(rp, results)]),
            "reading head -> QUERY, patched": np.array([p["attention_after"][head(r)] for p, r in zip(rp, results)]),
            "first token = donor's, unpatched": np.array([p["donor_before"] for p in rp]),
            "first token = donor's, patched": np.array([p["donor_after"] for p in rp]),
        }

    figures.draw_route_patch(
        {d: patch_bars(d) for d in causal.DIRECTIONS}, path("route_patch"),
        f"{common.layer_name(route)} attention output at QUERY patched from the other query (reading head of {common.layer_name(read)})", names,
    )
    figures.draw_layer_head(
        {f"{kind} pairs": [r["patching"][kind]["heads"] for r in results] for kind in causal.PAIR_KINDS},
        path("patching_heads"), names, "activation patching of hook_z per (layer, head): normalised effect on the first-token LD", label="effect",
    )
    figures.draw_layer_head(
        {f"{q} queries": [r["ablation"][q]["accuracy"] for r in results] for q in ("linear", "LogOp")},
        path("ablation_heads"), names, "first-token accuracy with one head mean-ablated", diverging=False, label="accuracy",
    )
    figures.draw_layer_head(
        {"truth value -> its letter": [r["lookup"]["prev_token"] for r in results], "answer's letter -> its truth value": [r["lookup"]["lookup"] for r in results]},
        path("lookup_heads"), names, "fact lookup: attention per (layer, head), teacher-forced proofs", diverging=False, label="attention",
    )
    position_maps, position_labels = {}, {}
    for kind in causal.PAIR_KINDS:
        mean, defined = mean_of_defined([r["patching"][kind]["positions"] for r in results])
        name = f"{kind} pairs" + ("" if defined == len(results) else f" ({defined} of {len(results)} seeds defined)")
        position_maps[name] = mean
        position_labels[name] = _position_labels(data.patch_pairs[kind][0], problem_cfg)
    figures.draw_layer_pos(
        position_maps, position_labels, path("patching_positions"),
        f"activation patching of hook_resid_pre per (layer, position), mean over seeds ({len(seeds)})", label="effect",
    )
    return files


def mean_of_defined(maps: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """The mean of the seeds' maps whose effects are defined (not all NaN), and how many those are."""
    defined = [np.asarray(m) for m in maps if np.isfinite(m).any()]
    return (np.nanmean(np.stack(defined), 0) if defined else np.asarray(maps[0])), len(defined)


def analyze(workdir: str, out_dir: str, seeds: Sequence[int] | None = None, settings: common.Settings = common.Settings(), step: int | None = None, progress: bool = True) -> dict:
    """Analyse the checkpoint in ``workdir``; write report.md, summary.json and PNGs to ``out_dir``; return the summary."""
    from logic_jax.train import config as config_lib
    from logic_jax.train import inspection

    t0 = time.time()
    common.check_out_dir(workdir, out_dir)
    step, state, run, _ = inspection.load(workdir, step)
    config = run["config"]
    model_cfg, problem_cfg = config_lib.model_config(config), config_lib.problem_config(config)
    stacked = common.host(state.params)
    available = common.num_seeds(stacked)
    seeds = list(range(available)) if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise common.AnalysisError("no seeds to analyse")
    if len(set(seeds)) < len(seeds):
        raise common.AnalysisError(f"seed indices {seeds}: each may be given once")
    for s in seeds:
        if not 0 <= s < available:
            raise common.AnalysisError(f"seed index {s} out of range: {workdir} holds seeds 0..{available - 1}")
    settings.layers(model_cfg.n_layers)  # checks route_layer / read_layer early
    os.makedirs(out_dir, exist_ok=True)

    data = make_problems(problem_cfg, settings)
    forward = common.forward_for(model_cfg)
    acc = accuracy.run(model_cfg, stacked, data.accuracy, seeds)
    results = []
    bar = tqdm(seeds, desc="analyse", unit="seed", disable=not progress)
    for s, metrics in zip(bar, acc):
        r = analyze_seed(forward, common.seed_params(stacked, s), model_cfg, data, settings, bar)
        r["accuracy"] = dict(metrics, per_query=accuracy.per_query(metrics))
        results.append(r)
    bar.close()

    meta = dict(
        workdir=os.path.abspath(workdir), step=int(step), seeds=seeds, model=model_cfg.to_dict(), problem=problem_cfg.to_dict(),
        settings=dataclasses.asdict(settings), layers=dict(zip(("route", "read"), settings.layers(model_cfg.n_layers))),
        members=[run["members"][s] for s in seeds], off_distribution=common.unseen(problem_cfg),
    )
    files = draw(out_dir, results, seeds, data, model_cfg, problem_cfg, settings)
    tables = report.tables(results, seeds, meta)
    meta["wall_time_s"] = round(time.time() - t0, 1)
    summary = report.summary(meta, tables, results, files)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(report.markdown(meta, tables, files))
    return summary
