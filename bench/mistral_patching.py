"""The 32 x 32 head_z patching sweep of the Mistral study vs the authors' loop of hooked runs.

    python bench/mistral_patching.py --shape=7b --pairs=64 --loop_heads=16 --compilation_cache=/tmp/jc   # one 80 GB GPU
    python bench/mistral_patching.py --shape=7b --pairs=64 --nocompare --study --compilation_cache=/tmp/jc
    python bench/mistral_patching.py --shape=small --pairs=8 --study                  # CPU

Random weights made directly on the device (bfloat16 by default): the timing does not depend
on them. Prompts: ``--pairs`` query-switch pairs of ``--shots``-shot prompts from the real
prompt builder and the Mistral v1 tokenizer (the 7B vocabulary). Measured, each after a
compiling warm-up call (compile times reported separately):

* sweep: ``sweeps.prepare`` (clean and counterfactual runs, prefix keys/values) plus the
  whole head_z sweep (every layer x head, last ``--positions`` positions), one vmapped call;
* loop (the authors' protocol, TransformerLens ``run_with_hooks`` per head): one full-prompt
  forward per head with that head's hook_z replaced at the last positions, compiled once
  (the head is data), one counterfactual run with cache first. ``--loop_heads`` heads are
  timed (spread over the layers) and the per-head time is multiplied by layers x heads
  (0: time them all);
* ``--study``: the whole ``patch_mistral.py`` pipeline (``study.run_study``) on the same
  random weights (no safetensors read: the checkpoint load is not included).

Prints one JSON line with the times, their ratio, the peak device memory (GPU) and the
analytic memory budget of the default batch.
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (no shadowing)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from logic_jax.interp.hooks import Patch, block_site  # noqa: E402
from logic_jax.llm import study, sweeps  # noqa: E402
from logic_jax.llm.batches import make_batches  # noqa: E402
from logic_jax.llm.prompts import PromptConfig, build_pairs  # noqa: E402
from logic_jax.llm.tokens import tokenize_pairs  # noqa: E402
from logic_jax.models import mistral  # noqa: E402
from logic_jax.models.mistral.tokenizer import sentencepiece_tokenizer, shipped_tokenizer_path  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("shape", "small", ["small", "7b"], "MistralConfig.small() or Mistral-7B-v0.1.")
flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Params and compute dtype.")
flags.DEFINE_integer("pairs", 64, "Prompt pairs (one batch).")
flags.DEFINE_integer("shots", 6, "In-context examples per prompt.")
flags.DEFINE_integer("positions", 5, "Patched last positions.")
flags.DEFINE_integer("chunk_size", 64, "Sweep cells per vmapped chunk (0: all at once).")
flags.DEFINE_integer("loop_heads", 0, "Heads timed in the loop baseline (0: every head).")
flags.DEFINE_bool("compare", True, "Time the head_z sweep against the per-head loop.")
flags.DEFINE_bool("study", False, "Also time the whole patch_mistral.py pipeline on these weights.")
flags.DEFINE_string("out", None, "Where the --study run writes (default: a temp dir).")
flags.DEFINE_string("compilation_cache", None, "JAX persistent compilation cache directory (shared by separate calls).")

GB = 1e9


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def peak_memory() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", 0) / GB if stats else None


def memory_budget(config: mistral.MistralConfig, batch: int, length: int, positions: int, chunk: int, dtype_bytes: int) -> dict:
    """Analytic device memory (GB) of the study's largest stages, for ``batch`` pairs."""
    c, b, lp = config, batch, length - positions
    params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(mistral.abstract_params(c))) * dtype_bytes
    prefix = 2 * c.num_layers * b * lp * c.num_kv_heads * c.head_dim * dtype_bytes  # keys + values, kept per batch
    cf_values = c.num_layers * b * positions * dtype_bytes * (
        2 * c.num_heads * c.head_dim + 2 * c.num_kv_heads * c.head_dim + 3 * c.hidden_size  # z, q, k, v, resid, attn, mlp
    )
    # One layer of a full-prompt run (prefill): scores and pattern in float32, the MLP's three
    # [B, L, d_mlp] arrays; only one layer is live at a time.
    prefill_layer = b * length * (2 * c.num_heads * length * 4 + 3 * c.intermediate_size * dtype_bytes + 6 * c.hidden_size * dtype_bytes)
    # One sweep cell: the same for the last P positions against all L keys, plus last-token logits.
    cell = b * positions * (2 * c.num_heads * length * 4 + 3 * c.intermediate_size * dtype_bytes + 6 * c.hidden_size * dtype_bytes) + b * c.vocab_size * 4
    return {
        "params": params / GB,
        "prefix_kv_per_batch": prefix / GB,
        "cf_values_per_batch": cf_values / GB,
        "prefill_one_layer": prefill_layer / GB,
        "sweep_chunk": chunk * cell / GB,
        # The sweeps keep the clean prefix; prepare also holds the counterfactual one for a while.
        "total_sweep_stage": (params + prefix + cf_values + chunk * cell) / GB,
        "total_prepare_stage": (params + 2 * prefix + cf_values + prefill_layer) / GB,
    }


def compare(config, params, batch, result: dict, P: int, chunk: int | None) -> None:
    """The head_z sweep (prepare + one vmapped call) vs one full-prompt hooked run per head."""
    layers, heads = config.num_layers, config.num_heads
    metric = sweeps.metric_of(batch)
    sites = sweeps.sweep_sites(layers, ("head_z",))

    # The sweep: prepare + one vmapped call over every (layer, head).
    def sweep():
        prepared = sweeps.prepare(config, params, batch, positions=P, cf_sites=sites)
        return prepared, sweeps.run_sweep("head_z", config, params, prepared, metric, chunk)

    _, result["sweep_first_call_s"] = timed(sweep)
    (prepared, grid), result["sweep_s"] = timed(sweep)
    _, result["prepare_s"] = timed(lambda: sweeps.prepare(config, params, batch, positions=P, cf_sites=sites))
    result["sweep_peak_memory_gb"] = peak_memory()
    clean_sum = float(metric(prepared.clean_logits[:, None]))
    del prepared

    # The loop: one full-prompt hooked run per head (compiled once; the head is data).
    forward = mistral.make_forward(config)
    z_sites = tuple(block_site(l, "hook_z") for l in range(layers))
    last = jnp.zeros(batch.length, bool).at[-P:].set(True)

    @jax.jit
    def cf_cache(params):
        return forward(params, batch.cf, None, z_sites, attention_mask=batch.mask)[1]

    @jax.jit
    def one_head(params, cf_z, layer, head):
        patches = {
            s: Patch(value=cf_z[s], mask=((layer == l) & last[:, None, None] & (jnp.arange(heads) == head)[None, :, None])[None])
            for l, s in enumerate(z_sites)
        }
        logits, _ = forward(params, batch.clean, patches, (), attention_mask=batch.mask)
        return metric(logits)

    _, result["loop_cf_compile_s"] = timed(lambda: cf_cache(params))
    cf_z, result["loop_cf_run_s"] = timed(lambda: cf_cache(params))
    cells = [(l, h) for l in range(layers) for h in range(heads)]
    if FLAGS.loop_heads:
        cells = [cells[i] for i in np.linspace(0, len(cells) - 1, FLAGS.loop_heads).astype(int)]
    _, result["loop_compile_s"] = timed(lambda: one_head(params, cf_z, 0, 0))
    start, loop_values = time.perf_counter(), []
    for l, h in cells:
        loop_values.append(float(one_head(params, cf_z, l, h)))  # a host value per head, as in the authors' loop
    per_head = (time.perf_counter() - start) / len(cells)
    result.update(loop_heads_timed=len(cells), loop_per_head_s=per_head, loop_s=result["loop_cf_run_s"] + per_head * layers * heads)
    result["loop_extrapolated"] = len(cells) < layers * heads
    result["ratio_loop_over_sweep"] = result["loop_s"] / result["sweep_s"]
    result["max_abs_diff_sweep_vs_loop"] = float(max(abs(grid[l, h] - v) for (l, h), v in zip(cells, loop_values)))
    result["clean_ld_sum"] = clean_sum
    result["loop_peak_memory_gb"] = peak_memory()


def run_whole_study(config, params, result: dict, P: int, chunk: int | None) -> None:
    """``study.run_study`` (what patch_mistral.py runs) on the device params: no safetensors read."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "config_only"
        checkpoint.mkdir()
        (checkpoint / "config.json").write_text(json.dumps(mistral.loading.config_to_hf(config)))
        out = Path(FLAGS.out or Path(tmp) / "out")
        circuit = None if FLAGS.shape == "7b" else {"decision": {"heads": [[3, 1]], "positions": ["last"]}}
        cfg = study.StudyConfig(num_pairs=FLAGS.pairs, shots=FLAGS.shots, positions=P, batch_size=FLAGS.pairs, chunk_size=chunk, circuit=circuit)
        summary, result["study_s"] = timed(lambda: study.run_study(checkpoint, out, cfg, dtype=FLAGS.dtype, progress=False, params=params))
        result["study_stage_s"] = {k: round(v, 2) for k, v in summary["timings"].items()}
        result["study_peak_memory_gb"] = peak_memory()


def main(argv) -> None:
    del argv
    if FLAGS.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", FLAGS.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    config = mistral.MistralConfig.mistral_7b_v01() if FLAGS.shape == "7b" else mistral.MistralConfig.small()
    dtype = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}[FLAGS.dtype]
    P, layers, heads = FLAGS.positions, config.num_layers, config.num_heads
    chunk = FLAGS.chunk_size or None
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(), "shape": FLAGS.shape,
        "dtype": FLAGS.dtype, "pairs": FLAGS.pairs, "shots": FLAGS.shots, "positions": P, "chunk_size": chunk,
    }

    params, result["init_s"] = timed(lambda: mistral.init_params(config, jax.random.PRNGKey(0), dtype))
    tokenizer = sentencepiece_tokenizer(shipped_tokenizer_path("mistral_v1"))
    pairs = build_pairs(0, FLAGS.pairs, PromptConfig(shots=FLAGS.shots))
    tokenized = tokenize_pairs(tokenizer, pairs, positions=P)
    batch = jax.tree.map(jnp.asarray, make_batches(pairs, tokenized, FLAGS.pairs)[0])
    result["prompt_tokens"] = int(batch.length)
    if FLAGS.compare:
        compare(config, params, batch, result, P, chunk)
    if FLAGS.study:
        run_whole_study(config, params, result, P, chunk)
    result["memory_budget_gb"] = memory_budget(config, FLAGS.pairs, int(batch.length), P, chunk or layers * heads, jnp.dtype(dtype).itemsize)
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
