"""Greedy decoding for checking a loaded checkpoint by hand.

No KV cache: the prompt sits left-padded in a fixed ``[batch, prompt + new]`` buffer and each
step reruns the full forward over the buffer (positions after the cursor are invisible to
the causal mask), all inside one compiled ``lax.fori_loop``. Quadratic, but exact and simple:
it is a correctness check, not a serving path.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.models.mistral.loading import CONFIG_FILE, CheckpointError, load_params, read_config
from logic_jax.models.mistral.modeling import abstract_params, make_forward
from logic_jax.models.mistral.sharding import MODES, batch_sharding, make_mesh, param_shardings
from logic_jax.models.mistral.tokenizer import load_tokenizer

DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, attention_mask)`` int32 ``[batch, longest]``, prompts right-aligned."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    longest = max(len(p) for p in prompts)
    tokens = np.full((len(prompts), longest), pad_id, np.int32)
    mask = np.zeros((len(prompts), longest), np.int32)
    for row, prompt in enumerate(prompts):
        tokens[row, longest - len(prompt) :] = prompt
        mask[row, longest - len(prompt) :] = 1
    return tokens, mask


def check_new_tokens(max_new_tokens) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:  # 0 aborts inside XLA
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")


@functools.partial(jax.jit, static_argnames=("forward", "max_new_tokens"))
def greedy_decode(forward, params, tokens: jax.Array, attention_mask: jax.Array, max_new_tokens: int) -> jax.Array:
    """The ``max_new_tokens`` greedy continuations ``[batch, max_new_tokens]`` of left-padded prompts."""
    check_new_tokens(max_new_tokens)
    batch, prompt_len = tokens.shape
    buffer = jnp.concatenate([tokens, jnp.zeros((batch, max_new_tokens), tokens.dtype)], axis=1)
    mask = jnp.concatenate([attention_mask, jnp.ones((batch, max_new_tokens), attention_mask.dtype)], axis=1)

    def step(i, buffer):
        logits, _ = forward(params, buffer, attention_mask=mask)
        cursor = prompt_len + i
        next_token = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, cursor - 1, axis=1, keepdims=False), axis=-1)
        return jax.lax.dynamic_update_index_in_dim(buffer, next_token.astype(buffer.dtype), cursor, axis=1)

    buffer = jax.lax.fori_loop(0, max_new_tokens, step, buffer)
    return buffer[:, prompt_len:]


def cut_at_eos(ids: Sequence[int], eos_id: int | None) -> list[int]:
    ids = [int(i) for i in ids]
    return ids[: ids.index(eos_id)] if eos_id is not None and eos_id in ids else ids


def generate_text(
    checkpoint: str | os.PathLike,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    dtype: str = "bfloat16",
    mesh: str = "none",
    tokenizer: str = "auto",
    log: Any = None,
) -> list[str]:
    """Load ``checkpoint``, greedily continue each prompt, return the decoded completions.

    ``mesh``: "none" (one device), "tensor" or "fsdp" over every visible device.
    ``log``: optional ``print``-like callable for load/compile timings (and a progress bar of the load).
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if mesh not in MODES:
        raise ValueError(f"unknown mesh {mesh!r}; choose one of {MODES}")
    check_new_tokens(max_new_tokens)
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}")
    config = read_config(checkpoint)  # also the clear error for a missing directory
    text_tokenizer = load_tokenizer(checkpoint, config, tokenizer)
    # Everything the config and the tokenizer can refuse, before the weights (14 GB for 7B) are read.
    prompt_ids = [text_tokenizer.encode(p) for p in prompts]
    tokens, attention_mask = left_pad(prompt_ids)
    if tokens.shape[1] + max_new_tokens > config.max_position_embeddings:
        raise CheckpointError(
            f"prompt ({tokens.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
            f"max_position_embeddings={config.max_position_embeddings} in {Path(checkpoint) / CONFIG_FILE}"
        )

    device_mesh = make_mesh() if mesh != "none" else None
    shardings = param_shardings(abstract_params(config, DTYPES[dtype]), device_mesh, mesh) if device_mesh else None
    start = time.perf_counter()
    config, params = load_params(checkpoint, DTYPES[dtype], shardings=shardings, config=config, progress=log is not None)
    if log:
        log(f"loaded {checkpoint} in {time.perf_counter() - start:.1f}s ({dtype}, mesh={mesh})")

    if device_mesh is not None:
        placement = batch_sharding(device_mesh, len(prompts))
        tokens, attention_mask = jax.device_put(tokens, placement), jax.device_put(attention_mask, placement)
    start = time.perf_counter()
    new_tokens = np.asarray(greedy_decode(make_forward(config), params, tokens, attention_mask, max_new_tokens))
    if log:
        log(f"generated {max_new_tokens} tokens x {len(prompts)} prompts in {time.perf_counter() - start:.1f}s")
    return [
        continuation_text(text_tokenizer.decode, ids, cut_at_eos(row, text_tokenizer.eos_id))
        for ids, row in zip(prompt_ids, new_tokens)
    ]


def continuation_text(decode, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text the new tokens add to the prompt's text.

    Decoding the new ids alone would drop the space a sentencepiece piece carries at its start.
    """
    prompt_text = decode(prompt_ids)
    full_text = decode(list(prompt_ids) + list(new_ids))
    return full_text[len(prompt_text) :] if full_text.startswith(prompt_text) else decode(new_ids)
