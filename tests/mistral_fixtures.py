"""Tiny random Mistral checkpoints written by transformers, and the PyTorch reference activations.

Reusable by any test or study that needs a Hugging Face Mistral directory without a hub:

    model = write_tiny_checkpoint(tmp_path, num_key_value_heads=2, sliding_window=5)
    logits, sites = torch_reference(model, tokens)   # TransformerLens-named numpy arrays

Needs torch (a test-only dependency).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import MistralConfig, MistralForCausalLM
from transformers.models.mistral import modeling_mistral

# GQA (4 query heads on 2 key/value heads), head_dim 24 != hidden/heads = 16, window 5.
TINY = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=24,
    sliding_window=5,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    initializer_range=0.15,  # larger than default so attention patterns are far from uniform
)


def tiny_model(seed: int = 0, **overrides: Any) -> MistralForCausalLM:
    """A random ``MistralForCausalLM`` (eager attention, float32), norms randomised too."""
    config = MistralConfig(**{**TINY, **overrides})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = MistralForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):  # default ones would hide a scale mix-up
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
    return model.eval()


def write_tiny_checkpoint(
    directory: str | Path, seed: int = 0, max_shard_size: str = "20KB", **overrides: Any
) -> MistralForCausalLM:
    """``save_pretrained`` a tiny model in sharded form (index + several shards); returns the model."""
    model = tiny_model(seed, **overrides)
    model.save_pretrained(str(directory), max_shard_size=max_shard_size)
    return model


def shard_files(directory: str | Path) -> list[Path]:
    return sorted(Path(directory).glob("model-*.safetensors"))


def edit_config(directory: str | Path, **changes: Any) -> None:
    """Rewrite fields of ``config.json`` (``None`` values are written as null; use ``drop=[...]`` to delete)."""
    path = Path(directory) / "config.json"
    config = json.loads(path.read_text())
    for field in changes.pop("drop", []):
        config.pop(field, None)
    config.update(changes)
    path.write_text(json.dumps(config, indent=2))


def write_word_tokenizer(directory: str | Path, vocab_size: int, add_bos: bool = True) -> None:
    """A word-level ``transformers`` tokenizer of exactly ``vocab_size`` tokens (BOS added on encode unless not ``add_bos``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"w{i}": i for i in range(3, vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(str(directory))


@contextlib.contextmanager
def _record_attention(records: dict[int, dict[str, torch.Tensor]]):
    """Wrap transformers' eager attention to keep q/k after rotary, raw scores and the pattern."""
    original = modeling_mistral.eager_attention_forward

    def recording(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        output, weights = original(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        repeated = modeling_mistral.repeat_kv(key, module.num_key_value_groups)
        records[module.layer_idx] = dict(
            rot_q=query, rot_k=key, scores=torch.matmul(query, repeated.transpose(2, 3)) * scaling, pattern=weights
        )
        return output, weights

    modeling_mistral.eager_attention_forward = recording
    try:
        yield
    finally:
        modeling_mistral.eager_attention_forward = original


def torch_reference(
    model: MistralForCausalLM,
    tokens: np.ndarray,
    attention_mask: np.ndarray | None = None,
    position_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Float32 logits and every TransformerLens site of the PyTorch model, as numpy arrays.

    Read with forward hooks on submodules (q/k/v projections, o_proj input for z, attention
    and MLP outputs, layer inputs/outputs) and the recorded eager attention (q/k after rotary,
    scores before masking, softmax pattern).
    """
    config = model.config
    batch, seq = tokens.shape
    sites: dict[str, torch.Tensor] = {}
    handles = []

    def save(name, reshape_heads=False):
        def hook(module, args, output):
            value = output[0] if isinstance(output, tuple) else output
            sites[name] = value.reshape(batch, seq, -1, config.head_dim) if reshape_heads else value

        return hook

    def save_input(name, reshape_heads=False):
        def hook(module, args):
            value = args[0]
            sites[name] = value.reshape(batch, seq, -1, config.head_dim) if reshape_heads else value

        return hook

    handles.append(model.model.embed_tokens.register_forward_hook(save("hook_embed")))
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        handles += [
            layer.register_forward_pre_hook(save_input(f"blocks.{i}.hook_resid_pre")),
            layer.register_forward_hook(save(f"blocks.{i}.hook_resid_post")),
            layer.post_attention_layernorm.register_forward_pre_hook(save_input(f"blocks.{i}.hook_resid_mid")),
            attn.register_forward_hook(save(f"blocks.{i}.hook_attn_out")),
            layer.mlp.register_forward_hook(save(f"blocks.{i}.hook_mlp_out")),
            attn.q_proj.register_forward_hook(save(f"blocks.{i}.attn.hook_q", True)),
            attn.k_proj.register_forward_hook(save(f"blocks.{i}.attn.hook_k", True)),
            attn.v_proj.register_forward_hook(save(f"blocks.{i}.attn.hook_v", True)),
            attn.o_proj.register_forward_pre_hook(save_input(f"blocks.{i}.attn.hook_z", True)),
        ]
    records: dict[int, dict[str, torch.Tensor]] = {}
    kwargs = {}
    if attention_mask is not None:
        kwargs["attention_mask"] = torch.tensor(attention_mask)
    if position_ids is not None:
        kwargs["position_ids"] = torch.tensor(position_ids)
    try:
        with torch.no_grad(), _record_attention(records):
            logits = model(torch.tensor(tokens), **kwargs).logits
    finally:
        for handle in handles:
            handle.remove()
    for i, record in records.items():
        sites[f"blocks.{i}.attn.hook_rot_q"] = record["rot_q"].transpose(1, 2)  # [b, s, heads, d]
        sites[f"blocks.{i}.attn.hook_rot_k"] = record["rot_k"].transpose(1, 2)
        sites[f"blocks.{i}.attn.hook_attn_scores"] = record["scores"]
        sites[f"blocks.{i}.attn.hook_pattern"] = record["pattern"]
    as_numpy = lambda t: t.detach().float().numpy()
    return as_numpy(logits), {name: as_numpy(value) for name, value in sites.items()}
