r"""The Mistral-7B patching study of paper.md, Part 2 (issue 6).

    python launch/patch_mistral.py --checkpoint=/path/to/Mistral-7B-v0.1 --num_pairs=64 --shots=6 \
        --seed=0 --positions=5 --out=out/mistral_query [--pair_kind=query|fact|rule_order] \
        [--dtype=bfloat16|float32] [--batch_size=64] [--chunk_size=64] [--mesh=none|tensor|fsdp] \
        [--circuit=circuit.json] [--attention_heads=12.9,13.11] [--tokenizer=auto|directory|mistral_v1|mistral_v3] \
        [--compilation_cache=DIR]

Writes pairs.jsonl, head_{z,q,k,v}.npy, resid.npy, attn_out.npy, mlp_out.npy,
head_z_attribution.npy, clean_logits.npy, summary.json, report.md and heatmaps to --out
(see logic_jax/llm/study.py). A prompt that the tokenizer breaks, or a circuit head outside
the model, is an error before any weight is read.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Hugging Face Mistral checkpoint directory.", required=True)
flags.DEFINE_string("out", None, "Output directory.", required=True)
flags.DEFINE_integer("num_pairs", 64, "Clean/counterfactual prompt pairs.", lower_bound=1)
flags.DEFINE_integer("shots", 6, "In-context examples per prompt.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Prompt seed; pair i depends on (seed, i) only.")
flags.DEFINE_integer("positions", 5, "Patch the last P positions (5: ' of', QUERY, '.', ' Answer', ':').", lower_bound=1)
flags.DEFINE_enum("pair_kind", "query", ["query", "fact", "rule_order"], "What the counterfactual question changes.")
flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Parameter and compute dtype.")
flags.DEFINE_integer("batch_size", 64, "Pairs per batch.", lower_bound=1)
flags.DEFINE_integer("chunk_size", 64, "Sweep cells per vmapped chunk (0: all cells of a sweep at once).", lower_bound=0)
flags.DEFINE_enum("mesh", "none", ["none", "tensor", "fsdp"], "Place params over all devices: tensor- or fully-sharded.")
flags.DEFINE_string("circuit", None, 'Circuit JSON (a file or an inline object): {"family": {"heads": [[layer, head], ...], "positions": ["query", "last"]}, ...}; default: paper.md\'s Mistral-7B circuit.')
flags.DEFINE_list("attention_heads", None, "Heads for attention statistics as layer.head; default: the circuit's heads.")
flags.DEFINE_enum("question_op", "or", ["or", "and", "any"], "Operator of the question's LogOp rule.")
flags.DEFINE_enum("example_truths", None, ["TT", "TF"], "Source truths of every example; default: a coin per prompt.")
flags.DEFINE_enum("tokenizer", "auto", ["auto", "directory", "mistral_v1", "mistral_v3"], "auto: the directory's tokenizer, else mistral-common's for the vocabulary size (v1: 32000, v3: 32768).")
flags.DEFINE_bool("accuracy", True, "Decode the proofs greedily and score them.")
flags.DEFINE_bool("attribution", True, "Run attribution patching over the heads and compare with the exact head_z sweep.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_string("compilation_cache", None, "Directory of JAX's persistent compilation cache: reruns skip compiling.")


def _heads(values):
    """``--attention_heads`` as (layer, head) pairs; each item must be exactly LAYER.HEAD."""
    if not values:
        return None
    heads = []
    for item in values:
        parts = item.split(".")
        if len(parts) != 2 or not all(part.strip().isdecimal() for part in parts):
            raise app.UsageError(f"--attention_heads: item {item!r} is not LAYER.HEAD (two non-negative integers, like 12.9)")
        heads.append((int(parts[0]), int(parts[1])))
    return tuple(heads)


def main(argv: list[str]) -> None:
    del argv
    attention_heads = _heads(FLAGS.attention_heads)  # a usage error before the slow imports
    if FLAGS.compilation_cache:
        import jax

        jax.config.update("jax_compilation_cache_dir", FLAGS.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    from logic_jax.llm.circuit import CircuitError
    from logic_jax.llm.prompts import PromptError
    from logic_jax.llm.study import OutputError, StudyConfig, run_study
    from logic_jax.llm.tokens import PromptCheckError
    from logic_jax.models.mistral.loading import CheckpointError
    from logic_jax.train.cli import exit_on_out_of_memory

    cfg = StudyConfig(
        num_pairs=FLAGS.num_pairs,
        shots=FLAGS.shots,
        seed=FLAGS.seed,
        positions=FLAGS.positions,
        pair_kind=FLAGS.pair_kind,
        batch_size=FLAGS.batch_size,
        chunk_size=FLAGS.chunk_size or None,
        circuit=FLAGS.circuit,
        attention_heads=attention_heads,
        question_op=FLAGS.question_op,
        example_truths=FLAGS.example_truths,
        accuracy=FLAGS.accuracy,
        attribution=FLAGS.attribution,
    )
    try:
        with exit_on_out_of_memory("lower --batch_size or --chunk_size, or shard the weights with --mesh"):
            summary = run_study(
                FLAGS.checkpoint, FLAGS.out, cfg, dtype=FLAGS.dtype, mesh=FLAGS.mesh, tokenizer=FLAGS.tokenizer,
                progress=FLAGS.progress, log=lambda message: print(message, file=sys.stderr),
            )
    except (CheckpointError, PromptError, PromptCheckError, CircuitError, OutputError) as err:
        sys.exit(f"error: {err}")
    ld = summary["logit_difference"]
    print(f"mean LD clean {ld['clean']:.3f}, counterfactual {ld['counterfactual']:.3f}; wrote {FLAGS.out}/report.md")
    if summary["accuracy"]:
        clean = summary["accuracy"]["clean"]
        print(f"clean prompts: first token {clean['first_token']:.3f}, exact match {clean['exact_match']:.3f}")
    kept = summary["circuit"]["scores"]["circuit"]
    if ld["effect_kind"] == "delta_ld" or kept["of_clean"] is None:  # rule_order pairs: LD_clean ~ LD_cf, so a share of it means nothing
        print(f"circuit kept: LD {kept['ld']:.3f} ({kept['ld'] - ld['clean']:+.3f} from clean)")
    else:
        normalized = "undefined" if kept["normalized"] is None else f"{kept['normalized']:.3f}"
        print(f"circuit keeps {kept['of_clean']:.3f} of the clean LD (LD_kept / LD_clean, the paper's measure); normalised: {normalized}")
    if summary["circuit"]["note"]:
        print(f"note: {summary['circuit']['note']}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
