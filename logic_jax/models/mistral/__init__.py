"""Flax NNX port of Mistral-7B that loads Hugging Face checkpoints (issue 5).

    from logic_jax.models import mistral
    config, params = mistral.load_params("/path/to/Mistral-7B-v0.1", dtype=jnp.bfloat16)
    forward = jax.jit(mistral.make_forward(config), static_argnames="cache")
    logits, cache = forward(params, tokens, cache=("blocks.3.attn.hook_z",))

Modules: ``config`` (hyper-parameters), ``modeling`` (NNX modules, pure forward, hook sites),
``params`` (the HF weight-name table), ``loading`` (config.json and streaming safetensors),
``sharding`` (tensor / FSDP placement), ``tokenizer``, ``generate`` (greedy decoding).
"""

from logic_jax.models.mistral.config import MistralConfig
from logic_jax.models.mistral.loading import (
    CheckpointError,
    UnsupportedConfigError,
    config_from_hf,
    load_params,
    read_config,
)
from logic_jax.models.mistral.modeling import (
    Mistral,
    abstract_params,
    init_params,
    make_forward,
    model_sites,
)
from logic_jax.models.mistral.params import WEIGHT_TABLE
from logic_jax.models.mistral.sharding import batch_sharding, make_mesh, param_shardings, shard_params
from logic_jax.models.mistral.tokenizer import Tokenizer, TokenizerMismatchError, load_tokenizer

__all__ = [
    "CheckpointError",
    "Mistral",
    "MistralConfig",
    "Tokenizer",
    "TokenizerMismatchError",
    "UnsupportedConfigError",
    "WEIGHT_TABLE",
    "abstract_params",
    "batch_sharding",
    "config_from_hf",
    "init_params",
    "load_params",
    "load_tokenizer",
    "make_forward",
    "make_mesh",
    "model_sites",
    "param_shardings",
    "read_config",
    "shard_params",
]
