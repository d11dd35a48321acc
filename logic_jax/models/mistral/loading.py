"""Load a Hugging Face Mistral checkpoint directory into our params, streaming one tensor at a time.

A directory holds ``config.json`` and either ``model.safetensors`` or shards
``model-XXXXX-of-YYYYY.safetensors`` listed by ``model.safetensors.index.json``. Before any
tensor is read, every shard's header is checked against its file size (truncation), the
index against the shards, the tensor names against ``params.WEIGHT_TABLE`` (missing, extra)
and every shape against the config. Then each tensor is read alone from the memory-mapped
file (``safe_open(framework="numpy")``, which handles bfloat16 via ml_dtypes; no torch) in
its stored layout and dtype, and a small compiled function with the param's sharding as
``out_shardings`` transposes, splits heads and casts it on the device. So host memory holds
one tensor at a time beyond the params already placed, and the host does no transposes. Every error is a ``CheckpointError`` naming the
file, tensor or config field.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from logic_jax.models.mistral import params as weight_table
from logic_jax.models.mistral.config import MistralConfig
from logic_jax.models.mistral.modeling import abstract_params

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names what is wrong."""


class UnsupportedConfigError(CheckpointError):
    """``config.json`` asks for something this port does not implement (the field is named)."""


# ---------------------------------------------------------------- config.json

# Fields that change nothing in an inference forward pass.
_HARMLESS_FIELDS = frozenset(
    {
        "transformers_version", "torch_dtype", "dtype", "bos_token_id", "eos_token_id",
        "pad_token_id", "use_cache", "attention_dropout", "initializer_range", "output_attentions",
        "output_hidden_states", "return_dict", "chunk_size_feed_forward", "is_encoder_decoder",
        "id2label", "label2id", "problem_type", "tokenizer_class",
    }
)
# Fields read into MistralConfig, or checked for a value this port supports.
_HANDLED_FIELDS = frozenset(
    {
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "rms_norm_eps", "sliding_window", "max_position_embeddings",
        "rope_theta", "rope_parameters", "rope_scaling", "model_type", "architectures", "hidden_act",
        "tie_word_embeddings", "attention_bias", "mlp_bias",
    }
)
# transformers' MistralConfig defaults, for fields a config.json leaves out.
_HF_DEFAULTS = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": None, "rms_norm_eps": 1e-6,
    "sliding_window": 4096, "max_position_embeddings": 131072, "rope_theta": 10000.0,
    "initializer_range": 0.02,
}


def _refuse(field: str, value: Any, why: str, source: str) -> None:
    raise UnsupportedConfigError(f"{source}: unsupported {field}={value!r}: {why}")


def _rope_theta(hf: dict, source: str) -> float:
    """Theta from ``rope_parameters`` (transformers >= 5) or top-level ``rope_theta`` (older files)."""
    if hf.get("rope_scaling") not in (None, {}):
        _refuse("rope_scaling", hf["rope_scaling"], "only plain rotary embeddings are implemented", source)
    rope = hf.get("rope_parameters")
    if rope is None:
        return _theta(hf.get("rope_theta", _HF_DEFAULTS["rope_theta"]), "rope_theta", source)
    if not isinstance(rope, dict):
        _refuse("rope_parameters", rope, "expected a dict", source)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        _refuse("rope_parameters.rope_type", rope_type, "only 'default' rotary embeddings are implemented", source)
    unknown = sorted(set(rope) - {"rope_type", "type", "rope_theta"})
    if unknown:
        _refuse(f"rope_parameters.{unknown[0]}", rope[unknown[0]], "only rope_type and rope_theta are implemented", source)
    if "rope_theta" in rope:
        return _theta(rope["rope_theta"], "rope_parameters.rope_theta", source)
    return _theta(hf.get("rope_theta", _HF_DEFAULTS["rope_theta"]), "rope_theta", source)


def _theta(value: Any, field: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not value > 0:
        _refuse(field, value, "expected a positive finite number", source)
    return float(value)


def config_from_hf(hf: dict, source: str = CONFIG_FILE) -> MistralConfig:
    """Our config from a parsed Hugging Face ``config.json``; refuses, by field, what we can't run.

    Mistral-7B v0.1 (rope theta 1e4, sliding window 4096) and v0.3 (32768 vocab, rope theta
    1e6, no window) both load. Refused: another ``model_type``, a non-SiLU ``hidden_act``,
    tied embeddings, rope scaling, biases, per-layer ``layer_types``, and any field not known
    to be harmless (a new field might change the math).
    """
    if hf.get("model_type", "mistral") != "mistral":
        _refuse("model_type", hf["model_type"], "this port runs model_type='mistral' only", source)
    architectures = hf.get("architectures") or ["MistralForCausalLM"]
    if not isinstance(architectures, list) or "MistralForCausalLM" not in architectures:  # a list: "in" on a string is a substring test
        _refuse("architectures", architectures, "expected MistralForCausalLM", source)
    if hf.get("hidden_act", "silu") != "silu":
        _refuse("hidden_act", hf["hidden_act"], "the MLP is SiLU-gated", source)
    if hf.get("tie_word_embeddings", False):
        _refuse("tie_word_embeddings", hf["tie_word_embeddings"], "this port has an untied LM head (lm_head.weight): false expected", source)
    for bias in ("attention_bias", "mlp_bias"):
        if hf.get(bias, False):
            _refuse(bias, hf[bias], "Mistral projections have no bias", source)
    # Keys starting with "_" are transformers' bookkeeping (_name_or_path, _attn_implementation_autoset, ...).
    unknown = sorted(k for k in set(hf) - _HARMLESS_FIELDS - _HANDLED_FIELDS if not k.startswith("_"))
    if unknown:
        _refuse(unknown[0], hf[unknown[0]], f"not a field this port knows (unknown fields: {unknown})", source)

    def get(field: str) -> Any:  # HF's default when absent; sliding_window may be an explicit null
        if field in hf and (hf[field] is not None or field == "sliding_window"):
            return hf[field]
        return _HF_DEFAULTS[field]

    def integer(field: str, value: Any, minimum: int = 1) -> int:  # no silent int(2.7), no bool as 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            _refuse(field, value, f"expected an integer >= {minimum}", source)
        return value

    def number(field: str) -> float:
        value = get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            _refuse(field, value, "expected a finite number >= 0", source)
        return float(value)

    num_heads = integer("num_attention_heads", get("num_attention_heads"))
    hidden_size = integer("hidden_size", get("hidden_size"))
    head_dim = integer("head_dim", hf["head_dim"]) if hf.get("head_dim") is not None else hidden_size // num_heads
    # As transformers: absent means its default (8); an explicit null means one per query head.
    num_kv_heads = num_heads if "num_key_value_heads" in hf and hf["num_key_value_heads"] is None else integer("num_key_value_heads", get("num_key_value_heads"))
    sliding_window = get("sliding_window")
    if sliding_window is not None:
        integer("sliding_window", sliding_window)
    if num_heads % num_kv_heads:
        _refuse("num_key_value_heads", num_kv_heads, f"must divide num_attention_heads={num_heads}", source)
    if head_dim < 2 or head_dim % 2:
        _refuse("head_dim", head_dim, "rotary embeddings need an even head_dim", source)
    return MistralConfig(
        vocab_size=integer("vocab_size", get("vocab_size")),
        hidden_size=hidden_size,
        intermediate_size=integer("intermediate_size", get("intermediate_size")),
        num_layers=integer("num_hidden_layers", get("num_hidden_layers")),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        rms_norm_eps=number("rms_norm_eps"),
        rope_theta=_rope_theta(hf, source),
        sliding_window=sliding_window,
        max_position_embeddings=integer("max_position_embeddings", get("max_position_embeddings")),
        initializer_range=number("initializer_range"),
    )


def config_to_hf(config: MistralConfig) -> dict:
    """The Hugging Face ``config.json`` fields of our config: the inverse of ``config_from_hf``."""
    return {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads, "head_dim": config.head_dim, "rms_norm_eps": config.rms_norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "sliding_window": config.sliding_window, "max_position_embeddings": config.max_position_embeddings,
        "initializer_range": config.initializer_range, "tie_word_embeddings": False,
    }


def _checkpoint_dir(checkpoint_dir: str | os.PathLike) -> Path:
    path = Path(checkpoint_dir)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist or is not a directory")
    return path


def read_config(checkpoint_dir: str | os.PathLike) -> MistralConfig:
    """Our config from ``checkpoint_dir/config.json``."""
    path = _checkpoint_dir(checkpoint_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a Hugging Face checkpoint directory has a config.json)")
    try:
        hf = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path}: a JSON {type(hf).__name__}, not an object of config fields")
    return config_from_hf(hf, source=str(path))


# ---------------------------------------------------------------- safetensors files


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor entries ``{name: {"dtype", "shape", "data_offsets"}}`` of one file, checked for truncation."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated: {size} bytes, not even the 8-byte header length")
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            raise CheckpointError(f"{path}: truncated: header says {header_len} header bytes, file has {size} bytes")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{path}: corrupt safetensors header ({err})") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (a JSON {type(header).__name__}, not an object)")
    header.pop("__metadata__", None)
    for name, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        shape_ok = isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets) and isinstance(entry.get("dtype"), str) and shape_ok):
            raise CheckpointError(f"{path}: corrupt safetensors header: tensor {name!r} lacks a dtype, a shape or two data_offsets ({entry!r})")
    data_end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    expected = 8 + header_len + data_end
    if size < expected:
        raise CheckpointError(f"{path}: truncated: the header needs {expected} bytes, the file has {size}")
    if size > expected:
        raise CheckpointError(f"{path}: {size - expected} trailing bytes after the tensors the header lists (the header needs {expected} bytes)")
    return header


def locate_tensors(checkpoint_dir: str | os.PathLike) -> dict[str, tuple[Path, dict]]:
    """``{tensor name: (file, header entry)}`` over the single file or every indexed shard."""
    directory = _checkpoint_dir(checkpoint_dir)
    index_path = directory / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
                raise TypeError(f"'weight_map' is a {type(weight_map).__name__}, not an object of tensor name -> file name")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{index_path}: not a safetensors index with a 'weight_map' ({err!r})") from err
        files = sorted(set(weight_map.values()))
    elif (directory / SINGLE_FILE).is_file():
        weight_map, files = None, [SINGLE_FILE]
    else:
        raise CheckpointError(f"{directory}: no {SINGLE_FILE} and no {INDEX_FILE} (sharded) found")

    located: dict[str, tuple[Path, dict]] = {}
    for file_name in files:
        path = directory / file_name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in {INDEX_FILE} but missing")
        for name, entry in read_safetensors_header(path).items():
            if name in located:
                raise CheckpointError(f"tensor {name!r} is stored twice: in {located[name][0]} and {path}")
            located[name] = (path, entry)
    if weight_map is not None:
        for name, file_name in weight_map.items():
            if name not in located or located[name][0].name != file_name:
                raise CheckpointError(f"{index_path}: lists tensor {name!r} in {file_name}, which does not hold it")
        unlisted = sorted(set(located) - set(weight_map))
        if unlisted:
            raise CheckpointError(f"{index_path}: shards hold tensors the index does not list: {unlisted[:10]}")
    return located


_FLOAT_DTYPES = ("F32", "F16", "BF16")  # safetensors names; quantised checkpoints are refused


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def plan_load(config: MistralConfig, located: dict[str, tuple[Path, dict]], abstract: dict) -> list[tuple]:
    """Check names and shapes; return ``(hf name, file, our path, transform, our shape)`` in file order."""
    expected = {name: (path, transform) for name, path, transform in weight_table.expected_hf_names(config.num_layers)}
    missing = sorted(set(expected) - set(located))
    if missing:
        raise CheckpointError(f"checkpoint is missing tensor(s) {_names(missing)}")
    extra = sorted(set(located) - set(expected))
    if extra:
        raise CheckpointError(f"checkpoint has unexpected tensor(s) {_names(extra)} (not in params.WEIGHT_TABLE)")

    plan = []
    for name, (path, transform) in expected.items():
        file, entry = located[name]
        our_shape = tuple(weight_table.get_path(abstract, path).shape)
        want = transform.hf_shape(our_shape)
        if tuple(entry["shape"]) != want:
            raise CheckpointError(
                f"tensor {name!r} in {file} has shape {tuple(entry['shape'])}, expected {want} from the config"
            )
        if entry["dtype"] not in _FLOAT_DTYPES:
            raise CheckpointError(f"tensor {name!r} in {file} is stored as {entry['dtype']}, expected one of {_FLOAT_DTYPES}")
        plan.append((name, file, path, transform, our_shape, entry["data_offsets"][0]))
    plan.sort(key=lambda row: (str(row[1]), row[5]))  # sequential reads through each file
    return [row[:5] for row in plan]


@functools.lru_cache(maxsize=None)
def _converter(transform, our_shape: tuple[int, ...], dtype, sharding):
    """Compiled HF layout -> ours: transpose/split and cast run on the device, not in numpy."""
    return jax.jit(lambda tensor: transform.to_ours(tensor, our_shape).astype(dtype), out_shardings=sharding)


def _place(tensor: np.ndarray, transform, our_shape: tuple[int, ...], dtype, sharding) -> jax.Array:
    # Block so that the host tensor is released before the next one is read.
    return _converter(transform, our_shape, jnp.dtype(dtype), sharding)(tensor).block_until_ready()


def load_params(
    checkpoint_dir: str | os.PathLike,
    dtype=jnp.bfloat16,
    shardings: Any = None,
    config: MistralConfig | None = None,
    progress: bool = False,
) -> tuple[MistralConfig, dict]:
    """``(config, params)`` from a Hugging Face checkpoint directory.

    ``dtype``: target dtype of every param (cast per tensor while streaming). ``shardings``: a
    pytree of ``jax.sharding.Sharding`` shaped like the params (see ``sharding.param_shardings``),
    or None for the default device. ``progress``: a progress bar over the tensors (Mistral-7B:
    291 tensors, 14 GB, minutes from a network disk).
    """
    from tqdm.auto import tqdm

    try:
        floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
        floating = False
    if not floating:  # an int dtype would truncate every weight
        raise ValueError(f"load dtype must be a floating type (bfloat16, float32, ...), got {dtype!r}")
    config = config or read_config(checkpoint_dir)
    abstract = abstract_params(config, dtype)
    plan = plan_load(config, locate_tensors(checkpoint_dir), abstract)
    params = jax.tree.map(lambda _: None, abstract)
    handles: dict[Path, Any] = {}
    try:
        for name, file, path, transform, our_shape in tqdm(plan, desc="load weights", unit="tensor", disable=not progress, dynamic_ncols=True):
            if file not in handles:
                handles.clear()  # plan is grouped by file: close the previous one
                try:
                    handles[file] = safe_open(file, framework="numpy")
                except Exception as err:  # safetensors raises its own error types
                    raise CheckpointError(f"{file}: cannot open as safetensors ({err})") from err
            try:
                tensor = handles[file].get_tensor(name)
            except Exception as err:  # safetensors raises its own error types
                raise CheckpointError(f"{file}: cannot read tensor {name!r} ({err})") from err
            sharding = weight_table.get_path(shardings, path) if shardings is not None else None
            weight_table.set_path(params, path, _place(tensor, transform, our_shape, dtype, sharding))
            del tensor
    finally:
        handles.clear()
    return config, params
