"""The whole Mistral patching study, from a checkpoint directory to the files of ``--out``.

    summary = run_study("/path/to/Mistral-7B-v0.1", "out/", StudyConfig(num_pairs=64))

Order: build and check every prompt pair with the tokenizer (errors before any weight is
read), load the weights, then per batch of pairs: the clean/counterfactual runs, the seven
sweeps, attribution patching, circuit verification, attention statistics and greedy decoding;
then the means, the files and the report. Files written to ``out``:

    pairs.jsonl           per pair: prompt texts exactly as tokenized, target token ids, ...
    head_z.npy            [layers, heads]     effects (sweeps.py's metric)
    head_q.npy            [layers, heads]
    head_k.npy, head_v.npy [layers, kv_heads]
    resid.npy             [layers, positions] (the last P positions, oldest first)
    attn_out.npy, mlp_out.npy [layers]
    head_z_attribution.npy [layers, heads]   attribution estimate on the scale of head_z.npy
    clean_logits.npy      [pairs, vocab] float32, last position of the clean prompts
    summary.json, report.md and the heatmaps (*.png)
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.analysis.common import to_json
from logic_jax.llm import accuracy, attention_stats, circuit as circuit_lib, report, sweeps
from logic_jax.llm.batches import make_batches
from logic_jax.llm.prompts import PromptConfig, PromptError, build_pairs
from logic_jax.llm.tokens import tokenize_pairs
from logic_jax.models.mistral.loading import load_params, read_config
from logic_jax.models.mistral.modeling import abstract_params
from logic_jax.models.mistral.sharding import MODES, make_mesh, param_shardings
from logic_jax.models.mistral.tokenizer import load_tokenizer

DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    num_pairs: int = 64
    shots: int = 6
    seed: int = 0
    positions: int = 5  # the last P positions that every sweep patches
    pair_kind: str = "query"
    batch_size: int = 64  # pairs per batch (see the README section for memory on an 80 GB GPU)
    chunk_size: int | None = 64  # sweep cells run together (None: all cells of a sweep at once)
    circuit: Any = None  # dict / JSON / path; None: paper.md's Mistral-7B circuit
    attention_heads: tuple | None = None  # (layer, head) pairs; None: the circuit's heads
    question_op: str = "or"
    example_truths: str | None = None
    sweeps: tuple[str, ...] = tuple(sweeps.SWEEPS)
    accuracy: bool = True
    attribution: bool = True
    top_k: int = 10

    def __post_init__(self):
        for name in ("num_pairs", "positions", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        unknown = sorted(set(self.sweeps) - set(sweeps.SWEEPS))
        if unknown:
            raise ValueError(f"unknown sweep(s) {unknown}; known: {list(sweeps.SWEEPS)}")


def top_cells(effect: np.ndarray, k: int) -> list[dict]:
    """The ``k`` (layer, head) cells of largest |effect|, largest first."""
    order = np.argsort(-np.abs(effect), axis=None)[:k]
    return [{"layer": int(l), "head": int(h), "effect": float(effect[l, h])} for l, h in zip(*np.unravel_index(order, effect.shape))]


def compare_attribution(exact: np.ndarray, estimate: np.ndarray, k: int) -> dict:
    """How well the attribution screen ranks heads: correlation and top-k overlap with the exact sweep."""
    k = min(k, exact.size)
    top = lambda a, n: set(np.argsort(-np.abs(a), axis=None)[:n].tolist())  # noqa: E731
    pearson = float(np.corrcoef(exact.ravel(), estimate.ravel())[0, 1]) if exact.size > 1 and exact.std() > 0 and estimate.std() > 0 else None
    return {
        "pearson": pearson,
        "top_k": k,
        "top_k_overlap": len(top(exact, k) & top(estimate, k)),
        "top_k_recall_at_2k": len(top(exact, k) & top(estimate, 2 * k)),
        "max_abs_error": float(np.max(np.abs(exact - estimate))),
    }


def pair_record(pair, tp) -> dict:
    return {
        "index": pair.index,
        "kind": pair.kind,
        "clean": pair.clean_text,
        "counterfactual": pair.cf_text,
        "clean_target": tp.clean_target,
        "counterfactual_target": tp.cf_target,
        "clean_target_letter": pair.clean_target,
        "counterfactual_target_letter": pair.cf_target,
        "clean_proof": pair.clean.proof_text,
        "counterfactual_proof": pair.cf.proof_text,
        "clean_case": pair.clean.case,
        "counterfactual_case": pair.cf.case,
        "fact_source": pair.fact_source,
        "num_tokens": tp.length,
        "query_index": tp.query_index,
    }


def output_files() -> tuple[str, ...]:
    """Every file name a study may write in ``out`` (this module and ``report.figures``)."""
    names = ["pairs.jsonl", "summary.json", "report.md", "clean_logits.npy", "layers.png", "attribution_head_z.png"]
    for name in sweeps.SWEEPS:
        names += [f"{name}.npy", f"{name}_attribution.npy", f"{name}.png"]
    return tuple(dict.fromkeys(names + [f"{name}.png" for name in report.HEATMAPS]))  # the heatmaps repeat sweep names


def remove_earlier_outputs(out: Path) -> int:
    """Delete an earlier study's files from ``out`` (a rerun with fewer sweeps, or without
    attribution, would leave its stale results beside the new ones); returns how many."""
    stale = [out / name for name in output_files() if (out / name).is_file()]
    for path in stale:
        path.unlink()
    return len(stale)


class OutputError(ValueError):
    """An output directory the study cannot write; raised before any weights load."""


def output_dir(out: str | Path) -> Path:
    """``out``, created now and checked writable, so a long study cannot fail at its very end."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way, a parent that is a file, no permission
        raise OutputError(f"--out {out}: cannot create the output directory ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out}: the directory is not writable")
    return out


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="step", disable=not enabled, dynamic_ncols=True)


def run_study(
    checkpoint: str | Path,
    out: str | Path,
    cfg: StudyConfig = StudyConfig(),
    dtype: str = "bfloat16",
    mesh: str = "none",
    tokenizer: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    params: Any = None,
) -> dict:
    """Run the study and write every file to ``out``; returns the summary dict.

    ``params``: weights already on the device (e.g. random ones for a benchmark), matching
    ``checkpoint``'s config.json; then no safetensors are read.
    """
    log = log or (lambda message: None)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if mesh not in MODES:
        raise ValueError(f"unknown mesh {mesh!r}; choose one of {MODES}")
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    # Everything that can fail on the prompts or the circuit fails before the weights load.
    config = read_config(checkpoint)
    text_tokenizer = load_tokenizer(checkpoint, config, tokenizer)
    circuit = circuit_lib.parse_circuit(cfg.circuit).validate(config)
    heads = tuple(tuple(h) for h in (cfg.attention_heads or circuit.heads))
    circuit_lib.check_heads(heads, config, "attention heads")
    prompt_cfg = PromptConfig(shots=cfg.shots, kind=cfg.pair_kind, example_truths=cfg.example_truths, question_op=cfg.question_op)
    pairs = build_pairs(cfg.seed, cfg.num_pairs, prompt_cfg)
    tokenized = tokenize_pairs(text_tokenizer, pairs, positions=cfg.positions)
    batches = make_batches(pairs, tokenized, cfg.batch_size)
    steps = max(max(len(tp.clean_proof_ids), len(tp.cf_proof_ids)) for tp in tokenized) + 2  # decoded: the proof, then a newline
    prompt_len = max(b.length for b in batches)
    longest = prompt_len + (steps if cfg.accuracy else 0)
    if longest > config.max_position_embeddings:  # RoPE would run past the positions the model was trained on
        raise PromptError(
            f"the prompts need {longest} positions ({prompt_len} tokens" + (f" + {steps} decoded for the accuracy" if cfg.accuracy else "")
            + f"), past max_position_embeddings={config.max_position_embeddings} of {checkpoint}'s config.json: use fewer shots"
        )
    out = output_dir(out)  # after the prompt checks (a refused prompt leaves no directory), before the weights
    timings["prompts"] = time.perf_counter() - clock
    log(f"{len(pairs)} {cfg.pair_kind} pairs, {batches[0].length} tokens, {len(batches)} batch(es) of {cfg.batch_size}")

    clock = time.perf_counter()
    if params is None:
        device_mesh = make_mesh() if mesh != "none" else None
        shardings = param_shardings(abstract_params(config, DTYPES[dtype]), device_mesh, mesh) if device_mesh else None
        config, params = load_params(checkpoint, DTYPES[dtype], shardings=shardings, config=config, progress=progress)
        timings["load"] = time.perf_counter() - clock
        log(f"loaded {checkpoint} ({dtype}, mesh={mesh}) in {timings['load']:.1f}s")
    else:
        want = jax.tree.map(lambda a: (a.shape, a.dtype), abstract_params(config, DTYPES[dtype]))
        if jax.tree.map(lambda a: (a.shape, a.dtype), params) != want:
            raise ValueError(f"the given params do not match {checkpoint}'s config.json in {dtype}")

    positions = cfg.positions
    totals = sweeps.Totals(effect_kind="delta_ld" if cfg.pair_kind == "rule_order" else "normalized")
    cf_sites = sweeps.sweep_sites(config.num_layers, tuple(dict.fromkeys(cfg.sweeps + ("head_z",))))
    pattern_sites = attention_stats.pattern_sites(heads)
    circuit_sums = np.zeros(len(circuit.variants()))
    attention_totals: dict[str, np.ndarray] = {}
    tally = accuracy.Tally()
    clean_logits, answers = [], []
    stages = ["prepare"] + list(cfg.sweeps) + (["attribution"] if cfg.attribution else []) + ["circuit"] + (["accuracy"] if cfg.accuracy else [])

    def timed(stage: str, fn):
        start = time.perf_counter()
        result = jax.block_until_ready(fn())
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start
        bar.set_postfix_str(stage)
        bar.update(1)
        return result

    with _progress(len(batches) * len(stages), progress) as bar:
        for b, host_batch in enumerate(batches):
            real = [p for p in range(b * cfg.batch_size, min((b + 1) * cfg.batch_size, len(pairs)))]
            batch = jax.tree.map(jnp.asarray, host_batch)
            metric = sweeps.metric_of(batch)
            prepared = timed("prepare", lambda: sweeps.prepare(config, params, batch, positions=positions, cf_sites=cf_sites, clean_sites=pattern_sites))
            totals.add_batch(prepared, metric)
            clean_logits.append(np.asarray(jax.device_get(prepared.clean_logits), np.float32)[: len(real)])
            for name in cfg.sweeps:
                totals.add(totals.sweeps, name, timed(name, lambda: sweeps.run_sweep(name, config, params, prepared, metric, cfg.chunk_size)))
            if cfg.attribution:
                totals.add(totals.attribution, "head_z", timed("attribution", lambda: sweeps.run_attribution(config, params, prepared, metric)))
            circuit_sums += timed("circuit", lambda: circuit_lib.circuit_lds(circuit, config, params, prepared, metric, batch, positions))
            for key, value in attention_stats.attention_sums(prepared.clean_cache, batch, heads).items():
                attention_totals[key] = attention_totals.get(key, 0.0) + value
            if cfg.accuracy:
                def decode_both():
                    return [accuracy.greedy(config, params, prompts, batch.mask, steps) for prompts in (batch.clean, batch.cf)]

                generated = [np.asarray(jax.device_get(g)) for g in timed("accuracy", decode_both)]
                batch_pairs = [pairs[p] for p in real]
                firsts = (host_batch.clean_first, host_batch.cf_first)
                decoded = [accuracy.score_batch(tally, text_tokenizer.decode, batch_pairs, role, g, f) for role, g, f in zip(("clean", "counterfactual"), generated, firsts)]
                answers += [{"clean": c, "counterfactual": d} for c, d in zip(*decoded)]
            del prepared

    effects = totals.effects()
    attribution = totals.attribution_effects()
    defined = totals.defined()
    if not defined:
        log(f"warning: mean LD clean {totals.mean_clean():.4g} = counterfactual {totals.mean_cf():.4g}: the model does not tell the pairs apart, so every normalised effect is undefined (NaN)")
    removed = remove_earlier_outputs(out)  # only now: a study that fails keeps the earlier one whole
    if removed:
        log(f"removed {removed} files of an earlier study from {out}")
    with open(out / "pairs.jsonl", "w") as f:
        for i, (pair, tp) in enumerate(zip(pairs, tokenized)):
            record = pair_record(pair, tp)
            if answers:
                record["answers"] = answers[i]
            f.write(json.dumps(record) + "\n")
    for name, value in effects.items():
        np.save(out / f"{name}.npy", value.astype(np.float32))
    for name, value in attribution.items():
        np.save(out / f"{name}_attribution.npy", value.astype(np.float32))
    np.save(out / "clean_logits.npy", np.concatenate(clean_logits).astype(np.float32))

    summary = {
        "config": {
            **{k: v for k, v in dataclasses.asdict(cfg).items() if k != "circuit"},
            "checkpoint": str(checkpoint),
            "dtype": dtype,
            "mesh": mesh,
            "tokenizer": text_tokenizer.source,
            "model": dataclasses.asdict(config),
            "devices": [str(d) for d in jax.devices()],
        },
        "prompt": {
            "num_pairs": len(pairs),
            "length": int(batches[0].length),
            "query_from_end": sorted({tp.length - 1 - tp.query_index for tp in tokenized}),
            "example_clean": pairs[0].clean_text,
            "example_counterfactual": pairs[0].cf_text,
        },
        "accuracy": tally.summary() if cfg.accuracy else None,
        "logit_difference": {"clean": totals.mean_clean(), "counterfactual": totals.mean_cf(), "effect_kind": totals.effect_kind, "effects_defined": defined},
        "top_heads": {name: top_cells(effects[name], cfg.top_k) for name in ("head_z", "head_q", "head_k", "head_v") if name in effects and defined},
        "attribution": compare_attribution(effects["head_z"], attribution["head_z"], cfg.top_k) if cfg.attribution and "head_z" in effects and defined else None,
        "circuit": {
            "spec": circuit.to_json(),
            "scores": circuit_lib.scores(circuit, circuit_sums, totals.count, totals.mean_clean(), totals.mean_cf()),
            "note": circuit_lib.protocol_note(cfg.pair_kind),
        },
        "attention": attention_stats.summarize(attention_totals, totals.count, heads),
        "timings": timings,
    }
    summary = to_json(summary)  # NaN (an undefined mean) as null: strict JSON
    images = report.figures(out, effects, attribution, positions)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(report.markdown(summary, images))
    return summary
