r"""Greedy text generation from a Hugging Face Mistral checkpoint directory, for checking by hand.

    python launch/generate.py --checkpoint=/path/to/Mistral-7B-v0.1 --prompt="The capital of France is" \
        [--max_new_tokens=32] [--dtype=bfloat16|float32] [--mesh=none|tensor|fsdp] \
        [--tokenizer=auto|directory|mistral_v1|mistral_v3]

Repeat --prompt for a batch. Prints each prompt and its completion.
"""

from __future__ import annotations

import os
import sys

# Run from a checkout without installing. Replace (not prepend to) the script's own folder on
# the path: a sibling like launch/inspect.py would otherwise shadow the standard library.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from logic_jax.models.mistral.generate import DTYPES, generate_text  # noqa: E402
from logic_jax.models.mistral.loading import CheckpointError  # noqa: E402
from logic_jax.models.mistral.sharding import MODES  # noqa: E402
from logic_jax.models.mistral.tokenizer import SOURCES  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Hugging Face checkpoint directory (config.json + safetensors).", required=True)
flags.DEFINE_multi_string("prompt", None, "Prompt text; repeat the flag for a batch.", required=True)
flags.DEFINE_integer("max_new_tokens", 32, "Tokens to generate greedily.", lower_bound=1)
flags.DEFINE_enum("dtype", "bfloat16", sorted(DTYPES), "Parameter and compute dtype.")
flags.DEFINE_enum("mesh", "none", list(MODES), "Place params over all devices: tensor- or fully-sharded.")
flags.DEFINE_enum("tokenizer", "auto", list(SOURCES), "auto: the directory's tokenizer, else mistral-common's for the vocabulary size (v1: 32000, v3: 32768).")


def main(argv: list[str]) -> None:
    del argv
    try:
        completions = generate_text(
            FLAGS.checkpoint,
            FLAGS.prompt,
            max_new_tokens=FLAGS.max_new_tokens,
            dtype=FLAGS.dtype,
            mesh=FLAGS.mesh,
            tokenizer=FLAGS.tokenizer,
            log=lambda message: print(message, file=sys.stderr),
        )
    except CheckpointError as err:
        sys.exit(f"error: {err}")
    for prompt, completion in zip(FLAGS.prompt, completions):
        print(f"{prompt}{completion}")


if __name__ == "__main__":
    app.run(main)
