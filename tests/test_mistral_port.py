"""The Flax Mistral port against transformers' PyTorch MistralForCausalLM (CPU, tiny random models).

Checkpoints are written by ``save_pretrained`` in sharded form (index + several shards).
float32: logits and every hook site match PyTorch to 1e-5 (rtol and atol).
bfloat16 tolerance (logits of magnitude ~5, against the float32 reference): max abs error
<= 0.25, and mean abs error <= 1.25x PyTorch's own bf16 mean error + 1e-3.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file, save_file

from logic_jax.interp.hooks import Hooks, Patch
from logic_jax.models import mistral
from logic_jax.models.mistral.generate import generate_text
from logic_jax.models.mistral.modeling import attention_allowed, positions_from_mask
from logic_jax.models.mistral.tokenizer import TokenizerDifferenceWarning, load_tokenizer, sentencepiece_tokenizer, shipped_tokenizer_path

sys.path.insert(0, str(Path(__file__).parent))
from mistral_fixtures import (  # noqa: E402
    edit_config,
    shard_files,
    torch_reference,
    write_tiny_checkpoint,
    write_word_tokenizer,
)

REPO = Path(__file__).resolve().parents[1]
F32_TOL = dict(rtol=1e-5, atol=1e-5)
SEQ = 12  # longer than the sliding window (5)


@pytest.fixture(scope="module")
def gqa_checkpoint(tmp_path_factory):
    """4 query heads on 2 kv heads, head_dim 24 (hidden/heads would be 16), sliding window 5."""
    directory = tmp_path_factory.mktemp("gqa_window")
    return directory, write_tiny_checkpoint(directory)


@pytest.fixture(scope="module")
def v03_checkpoint(tmp_path_factory):
    """v0.3-style: 32768 vocab, rope theta 1e6 as an old top-level field, no window; MQA, default head_dim."""
    directory = tmp_path_factory.mktemp("v03_full")
    model = write_tiny_checkpoint(
        directory,
        seed=1,
        vocab_size=32768,
        num_key_value_heads=1,
        head_dim=None,
        sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    )
    edit_config(directory, drop=["rope_parameters"], rope_theta=1e6)
    return directory, model


@pytest.fixture(scope="module")
def single_file_checkpoint(tmp_path_factory):
    """The GQA model as one model.safetensors (no index)."""
    directory = tmp_path_factory.mktemp("single_file")
    write_tiny_checkpoint(directory, max_shard_size="5MB")
    assert not (directory / "model.safetensors.index.json").exists()
    return directory


def tokens_for(vocab_size: int, batch: int = 2, seq: int = SEQ, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, vocab_size, (batch, seq)).astype(np.int32)


def jit_forward(config):
    return jax.jit(mistral.make_forward(config), static_argnames="cache")


def copy_checkpoint(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


# ---------------------------------------------------------------- numerics against PyTorch


def test_checkpoint_is_written_sharded(gqa_checkpoint):
    directory, _ = gqa_checkpoint
    assert (directory / "model.safetensors.index.json").is_file()
    assert len(shard_files(directory)) > 1


@pytest.mark.parametrize("which", ["gqa_checkpoint", "v03_checkpoint"])
def test_float32_matches_pytorch_at_every_site(which, request):
    directory, model = request.getfixturevalue(which)
    config, params = mistral.load_params(directory, dtype=jnp.float32)
    assert config.sliding_window == model.config.sliding_window
    assert config.rope_theta == model.config.rope_parameters["rope_theta"]
    tokens = tokens_for(config.vocab_size)
    ref_logits, ref_sites = torch_reference(model, tokens)

    sites = mistral.model_sites(config.num_layers)
    logits, cache = jit_forward(config)(params, tokens, cache=sites)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, **F32_TOL)
    assert set(cache) == set(ref_sites) == set(sites)

    allowed = np.asarray(attention_allowed(SEQ, config.sliding_window, None))
    for name in sites:
        ours, theirs = np.asarray(cache[name]), ref_sites[name]
        assert ours.shape == theirs.shape, name
        if name.endswith("hook_attn_scores"):  # masked entries differ by convention (-inf vs min)
            ours, theirs = np.where(allowed, ours, 0.0), np.where(allowed, theirs, 0.0)
        np.testing.assert_allclose(ours, theirs, **F32_TOL, err_msg=name)
    if config.sliding_window is not None:  # the window really cut something
        pattern = np.asarray(cache["blocks.0.attn.hook_pattern"])
        assert np.all(pattern[:, :, -1, : SEQ - config.sliding_window] == 0)


def test_the_load_shows_progress_over_the_tensors(gqa_checkpoint, capsys):
    directory, _ = gqa_checkpoint
    _, quiet = mistral.load_params(directory, dtype=jnp.float32)
    assert "load weights" not in capsys.readouterr().err
    _, params = mistral.load_params(directory, dtype=jnp.float32, progress=True)
    err = capsys.readouterr().err
    tensors = sum(len(load_file(f)) for f in shard_files(directory))  # one step a checkpoint tensor
    assert "load weights: 100%" in err and f"{tensors}/{tensors} [" in err, err
    jax.tree.map(np.testing.assert_array_equal, params, quiet)


def test_left_padded_batch_matches_pytorch(gqa_checkpoint):
    directory, model = gqa_checkpoint
    config, params = mistral.load_params(directory, dtype=jnp.float32)
    tokens = tokens_for(config.vocab_size)
    mask = np.ones_like(tokens)
    mask[1, :5] = 0  # second prompt is 7 tokens, left-padded
    positions = np.asarray(positions_from_mask(mask))
    ref_logits, _ = torch_reference(model, tokens, attention_mask=mask, position_ids=positions)
    logits, _ = jit_forward(config)(params, tokens, attention_mask=mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(logits)[real], ref_logits[real], **F32_TOL)
    # and the padded prompt alone gives the same logits as inside the batch
    alone, _ = jit_forward(config)(params, tokens[1:, 5:])
    np.testing.assert_allclose(np.asarray(logits)[1, 5:], np.asarray(alone)[0], **F32_TOL)


def test_bfloat16_within_stated_tolerance(gqa_checkpoint):
    directory, model = gqa_checkpoint
    config, params = mistral.load_params(directory, dtype=jnp.bfloat16)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(params))
    tokens = tokens_for(config.vocab_size, batch=4, seq=16)
    ref_logits, _ = torch_reference(model, tokens)
    logits, cache = jit_forward(config)(params, tokens, cache=("blocks.1.attn.hook_pattern", "blocks.1.hook_resid_post"))
    assert logits.dtype == jnp.float32
    assert cache["blocks.1.attn.hook_pattern"].dtype == jnp.float32  # softmax in float32
    assert cache["blocks.1.hook_resid_post"].dtype == jnp.bfloat16

    with torch.no_grad():
        torch_bf16 = model.to(torch.bfloat16)(torch.tensor(tokens)).logits.float().numpy()
    model.to(torch.float32)
    port_error = np.abs(np.asarray(logits) - ref_logits)
    torch_error = np.abs(torch_bf16 - ref_logits)
    assert port_error.max() <= 0.25, port_error.max()
    assert port_error.mean() <= 1.25 * torch_error.mean() + 1e-3, (port_error.mean(), torch_error.mean())


def test_bfloat16_checkpoint_loads_exactly(tmp_path):
    model = write_tiny_checkpoint(tmp_path, seed=3).to(torch.bfloat16)
    model.save_pretrained(str(tmp_path), max_shard_size="20KB")  # BF16 tensors on disk
    _, params = mistral.load_params(tmp_path, dtype=jnp.float32)
    expected = model.model.layers[1].self_attn.o_proj.weight.detach().float().numpy()  # [d_model, heads*d_head]
    ours = np.asarray(params["layers"][1]["attn"]["o_proj"])  # [heads, d_head, d_model]
    np.testing.assert_array_equal(ours.reshape(-1, ours.shape[-1]).T, expected)


# ---------------------------------------------------------------- hooks and patching


def test_sites_are_exactly_what_forward_calls(gqa_checkpoint):
    directory, _ = gqa_checkpoint
    config, params = mistral.load_params(directory, dtype=jnp.float32)
    model = mistral.Mistral(config, rngs=nnx.Rngs(0))
    hooks = Hooks(known=model.sites())
    model(tokens_for(config.vocab_size), hooks)
    assert sorted(hooks.seen) == sorted(model.sites())  # each exactly once
    assert "hook_embed" in hooks.seen and "hook_pos_embed" not in hooks.seen
    with pytest.raises(KeyError, match="hook_pos_embed"):
        mistral.make_forward(config)(params, tokens_for(config.vocab_size), cache=("hook_pos_embed",))


def test_hook_z_patch_per_head_and_vmap_sweep(gqa_checkpoint):
    directory, _ = gqa_checkpoint
    config, params = mistral.load_params(directory, dtype=jnp.float32)
    tokens = tokens_for(config.vocab_size)
    forward = mistral.make_forward(config)
    site = "blocks.0.attn.hook_z"

    def ablate_head(head_mask):  # head_mask [n_heads] -> zero z of the masked heads
        return {site: Patch(value=0.0, mask=head_mask[None, None, :, None])}

    masks = jnp.eye(config.num_heads, dtype=bool)
    swept = jax.jit(jax.vmap(lambda m: forward(params, tokens, ablate_head(m))[0]))(masks)
    for head in (0, 3):  # zeroing z of a head == removing its rows of o_proj
        edited = jax.tree.map(lambda x: x, params)
        edited["layers"][0]["attn"]["o_proj"] = params["layers"][0]["attn"]["o_proj"].at[head].set(0.0)
        expected, _ = forward(edited, tokens)
        np.testing.assert_allclose(np.asarray(swept[head]), np.asarray(expected), **F32_TOL)
    clean, _ = forward(params, tokens)
    assert not np.allclose(np.asarray(swept[0]), np.asarray(clean))


# ---------------------------------------------------------------- sharding


@pytest.mark.parametrize("mode", ["tensor", "fsdp"])
def test_sharded_forward_equals_single_device(gqa_checkpoint, mode):
    assert jax.device_count() == 8, "tests/conftest.py should simulate 8 CPU devices"
    directory, _ = gqa_checkpoint
    config, single = mistral.load_params(directory, dtype=jnp.float32)
    tokens = tokens_for(config.vocab_size, batch=4)
    forward = jit_forward(config)
    sites = ("blocks.1.attn.hook_z", "blocks.1.hook_resid_post")
    ref_logits, ref_cache = forward(single, tokens, cache=sites)

    mesh = mistral.make_mesh(data=2, model=4)
    shardings = mistral.param_shardings(mistral.abstract_params(config), mesh, mode)
    _, streamed = mistral.load_params(directory, dtype=jnp.float32, shardings=shardings)
    q_proj = streamed["layers"][0]["attn"]["q_proj"]
    assert len(q_proj.sharding.device_set) == 8
    assert q_proj.addressable_shards[0].data.shape != q_proj.shape  # really split
    placed = mistral.shard_params(single, mesh, mode)
    batch = jax.device_put(tokens, mistral.batch_sharding(mesh, len(tokens)))
    for params in (streamed, placed):
        logits, cache = forward(params, batch, cache=sites)
        np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), **F32_TOL)
        for name in sites:
            np.testing.assert_allclose(np.asarray(cache[name]), np.asarray(ref_cache[name]), **F32_TOL)


# ---------------------------------------------------------------- loading


def test_loader_holds_one_tensor_at_a_time(tmp_path):
    write_tiny_checkpoint(tmp_path, max_shard_size="1MB", hidden_size=256, intermediate_size=512,
                          num_hidden_layers=6, vocab_size=2048, head_dim=64)
    mistral.load_params(tmp_path, dtype=jnp.float32)  # first call: imports and caches out of the way
    tracemalloc.start()
    _, params = mistral.load_params(tmp_path, dtype=jnp.float32)
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    sizes = [leaf.nbytes for leaf in jax.tree.leaves(params)]
    # On CPU, jax may keep a placed host array as the device buffer itself (that is the one
    # copy: `retained`). Beyond it, the load only ever held the largest tensor as read plus
    # its transposed copy; a read-everything-then-place loader would need the whole model.
    assert peak - retained < 3 * max(sizes) < sum(sizes) / 2, (peak, retained, max(sizes), sum(sizes))


def _rewrite_tensor(directory: Path, name: str, new_value=None, remove=False, shard_of: str | None = None) -> None:
    """Change, add (into the shard of ``shard_of``) or remove one tensor, index included, as a broken export would."""
    index_path = directory / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = directory / index["weight_map"][shard_of or name]
    tensors = load_file(shard)
    if remove:
        del tensors[name], index["weight_map"][name]
    else:
        tensors[name] = new_value
        index["weight_map"][name] = shard.name
    save_file(tensors, shard, metadata={"format": "pt"})
    index_path.write_text(json.dumps(index))


def test_missing_tensor_is_named(gqa_checkpoint, tmp_path):
    directory = copy_checkpoint(gqa_checkpoint[0], tmp_path / "ckpt")
    _rewrite_tensor(directory, "model.layers.1.mlp.up_proj.weight", remove=True)
    with pytest.raises(mistral.CheckpointError, match=r"missing tensor\(s\) 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        mistral.load_params(directory)


def test_extra_tensor_is_named(gqa_checkpoint, tmp_path):
    directory = copy_checkpoint(gqa_checkpoint[0], tmp_path / "ckpt")
    _rewrite_tensor(directory, "model.layers.0.self_attn.rotary_emb.inv_freq", np.ones(12, np.float32),
                    shard_of="model.layers.0.self_attn.q_proj.weight")
    with pytest.raises(mistral.CheckpointError, match=r"unexpected tensor\(s\) 'model\.layers\.0\.self_attn\.rotary_emb"):
        mistral.load_params(directory)


def test_misshaped_tensor_is_named(gqa_checkpoint, tmp_path):
    directory = copy_checkpoint(gqa_checkpoint[0], tmp_path / "ckpt")
    _rewrite_tensor(directory, "model.layers.0.self_attn.k_proj.weight", np.zeros((96, 64), np.float32))
    with pytest.raises(mistral.CheckpointError, match=r"'model\.layers\.0\.self_attn\.k_proj\.weight'.*\(96, 64\), expected \(48, 64\)"):
        mistral.load_params(directory)


def test_truncated_shard_is_named(gqa_checkpoint, tmp_path):
    directory = copy_checkpoint(gqa_checkpoint[0], tmp_path / "ckpt")
    shard = shard_files(directory)[2]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(mistral.CheckpointError, match=rf"{shard.name}: truncated"):
        mistral.load_params(directory)
    shard.write_bytes(data[:5])
    with pytest.raises(mistral.CheckpointError, match=rf"{shard.name}: truncated"):
        mistral.load_params(directory)


def test_missing_shard_and_missing_directory_are_named(gqa_checkpoint, tmp_path):
    directory = copy_checkpoint(gqa_checkpoint[0], tmp_path / "ckpt")
    gone = shard_files(directory)[0]
    gone.unlink()
    with pytest.raises(mistral.CheckpointError, match=rf"{gone.name}: listed in model.safetensors.index.json but missing"):
        mistral.load_params(directory)
    with pytest.raises(mistral.CheckpointError, match="does not exist"):
        mistral.load_params(tmp_path / "nowhere")


def _rewrite_header(path: Path, edit) -> None:
    """Rewrite a safetensors file with ``edit(header)`` applied to its JSON header, the data unchanged."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    edit(header)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length :])


def _first_tensor(header: dict) -> str:
    return min((name for name in header if name != "__metadata__"), key=lambda name: header[name]["data_offsets"][0])


def test_trailing_bytes_are_named(single_file_checkpoint, tmp_path):
    directory = copy_checkpoint(single_file_checkpoint, tmp_path / "ckpt")
    with open(directory / "model.safetensors", "ab") as f:
        f.write(bytes(64))
    with pytest.raises(mistral.CheckpointError, match=r"model\.safetensors: 64 trailing bytes"):
        mistral.load_params(directory)


def test_file_that_safe_open_refuses_is_named(single_file_checkpoint, tmp_path):
    # Our header checks pass (same tensors, same end of data) but the first tensor starts 4
    # bytes late: only safetensors' own parser, at safe_open, sees it.
    directory = copy_checkpoint(single_file_checkpoint, tmp_path / "ckpt")
    _rewrite_header(directory / "model.safetensors", lambda h: h[_first_tensor(h)]["data_offsets"].__setitem__(0, 4))
    with pytest.raises(mistral.CheckpointError, match=r"model\.safetensors: cannot open as safetensors .*invalid offset"):
        mistral.load_params(directory)


def _drop_data_offsets(directory: Path) -> str:
    shard = shard_files(directory)[0]
    _rewrite_header(shard, lambda h: h[_first_tensor(h)].pop("data_offsets"))
    return rf"{shard.name}: corrupt safetensors header: tensor '[\w.]+' lacks .*data_offsets"


def _weight_map_as_list(directory: Path) -> str:
    index_path = directory / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"] = sorted(index["weight_map"])
    index_path.write_text(json.dumps(index))
    return r"model\.safetensors\.index\.json: not a safetensors index with a 'weight_map'.*'weight_map' is a list"


def _config_as_list(directory: Path) -> str:
    (directory / "config.json").write_text(json.dumps([json.loads((directory / "config.json").read_text())]))
    return r"config\.json: a JSON list, not an object of config fields"


@pytest.mark.parametrize("corrupt", [_drop_data_offsets, _weight_map_as_list, _config_as_list])
def test_malformed_structures_are_named(gqa_checkpoint, tmp_path, corrupt):
    directory = copy_checkpoint(gqa_checkpoint[0], tmp_path / "ckpt")
    with pytest.raises(mistral.CheckpointError, match=corrupt(directory)):
        mistral.load_params(directory)


def test_absent_num_key_value_heads_means_transformers_default(tmp_path):
    from transformers import MistralConfig as HFConfig

    model = write_tiny_checkpoint(tmp_path, num_attention_heads=8, num_key_value_heads=8, head_dim=None)
    edit_config(tmp_path, drop=["num_key_value_heads"])
    assert "num_key_value_heads" not in json.loads((tmp_path / "config.json").read_text())
    assert HFConfig.from_pretrained(str(tmp_path)).num_key_value_heads == 8  # transformers' default
    config, params = mistral.load_params(tmp_path, dtype=jnp.float32)
    assert config.num_kv_heads == 8 and config.num_heads == 8
    assert mistral.config_from_hf(HFConfig.from_pretrained(str(tmp_path)).to_dict()) == config
    tokens = tokens_for(config.vocab_size)
    logits, _ = mistral.make_forward(config)(params, tokens)
    np.testing.assert_allclose(np.asarray(logits), torch_reference(model, tokens)[0], **F32_TOL)


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}), "rope_parameters.rope_type"),
        (dict(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling"),
        (dict(hidden_act="gelu"), "hidden_act"),
        (dict(tie_word_embeddings=True), "tie_word_embeddings"),
        (dict(layer_types=["full_attention", "sliding_attention"]), "layer_types"),
        (dict(model_type="llama"), "model_type"),
        (dict(attention_bias=True), "attention_bias"),
        (dict(quantization_config={"quant_method": "gptq"}), "quantization_config"),
    ],
)
def test_unsupported_config_field_is_named(gqa_checkpoint, tmp_path, changes, field):
    directory = copy_checkpoint(gqa_checkpoint[0], tmp_path / "ckpt")
    edit_config(directory, **changes)
    with pytest.raises(mistral.UnsupportedConfigError, match=rf"unsupported {field.replace('.', '[.]')}="):
        mistral.read_config(directory)


MISTRAL_7B_V01_CONFIG = {  # mistralai/Mistral-7B-v0.1 config.json
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000,
}


def test_real_mistral_7b_configs_are_supported():
    assert mistral.config_from_hf(MISTRAL_7B_V01_CONFIG) == mistral.MistralConfig.mistral_7b_v01()
    v03 = {**MISTRAL_7B_V01_CONFIG, "vocab_size": 32768, "rope_theta": 1e6, "sliding_window": None,
           "attention_dropout": 0.0, "transformers_version": "4.42.0.dev0"}
    assert mistral.config_from_hf(v03) == mistral.MistralConfig.mistral_7b_v03()
    # transformers' bookkeeping keys (a leading "_") change no math; a null theta is refused by name.
    saved = {**MISTRAL_7B_V01_CONFIG, "_name_or_path": "x", "_attn_implementation_autoset": True}
    assert mistral.config_from_hf(saved) == mistral.MistralConfig.mistral_7b_v01()
    with pytest.raises(mistral.UnsupportedConfigError, match=r"unsupported rope_theta=None: expected a positive finite number"):
        mistral.config_from_hf({**MISTRAL_7B_V01_CONFIG, "rope_theta": None})


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_key_value_heads", 0),  # was a ZeroDivisionError
        ("num_attention_heads", 0),
        ("num_hidden_layers", 2.7),  # was silently 2 layers
        ("sliding_window", True),  # was a window of 1 token
        ("head_dim", 0),
        ("rms_norm_eps", "x"),  # was a bare ValueError
    ],
)
def test_bad_config_values_are_named(field, value):
    with pytest.raises(mistral.UnsupportedConfigError, match=rf"unsupported {field}={value!r}: expected"):
        mistral.config_from_hf({**MISTRAL_7B_V01_CONFIG, field: value})


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_from_directory_and_vocab_mismatch(gqa_checkpoint, tmp_path):
    directory = copy_checkpoint(gqa_checkpoint[0], tmp_path / "ckpt")
    config = mistral.read_config(directory)
    with pytest.raises(mistral.TokenizerMismatchError, match="32000 tokens but the model's config.vocab_size is 128"):
        load_tokenizer(directory, config, "auto")  # no tokenizer files: mistral-common's v1
    write_word_tokenizer(directory, vocab_size=128)
    tokenizer = load_tokenizer(directory, config, "auto")
    assert tokenizer.encode("w5 w7") == [1, 5, 7]
    write_word_tokenizer(directory, vocab_size=100)
    with pytest.raises(mistral.TokenizerMismatchError, match="100 tokens"):
        load_tokenizer(directory, config, "directory")
    write_word_tokenizer(directory, vocab_size=128, add_bos=False)  # Mistral was trained with BOS first: it is added
    assert load_tokenizer(directory, config, "directory").encode("w5 w7") == [1, 5, 7]


def test_a_directory_with_only_tokenizer_model_is_read_by_sentencepiece(v01_checkpoint, tmp_path):
    # transformers 5 rebuilds a bare tokenizer.model without sentencepiece's leading space ("The", not "▁The").
    directory = copy_checkpoint(v01_checkpoint[0], tmp_path / "ckpt")
    shutil.copy(shipped_tokenizer_path("mistral_v1"), directory / "tokenizer.model")
    config = mistral.read_config(directory)
    reference = sentencepiece_tokenizer(shipped_tokenizer_path("mistral_v1"))
    for source in ("auto", "directory"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", TokenizerDifferenceWarning)  # the same ids: no warning
            tokenizer = load_tokenizer(directory, config, source)
        assert tokenizer.source == str(directory / "tokenizer.model")
        for text in ("The capital of France is", " x  y", "Rules: A or B implies C."):
            assert tokenizer.encode(text) == reference.encode(text) and tokenizer.encode(text)[0] == 1
    assert reference.encode("The capital of France is")[:2] == [1, 415]  # "▁The"
    # A tokenizer.json of the same size that encodes otherwise is used, with a warning naming the difference.
    write_word_tokenizer(directory, vocab_size=32000)
    with pytest.warns(TokenizerDifferenceWarning, match=r"AutoTokenizer\(.*\) encodes 'Rules: .* unlike mistral-common's mistral_v1 .* first difference at id 1"):
        assert load_tokenizer(directory, config, "auto").encode("w5 w7") == [1, 5, 7]
    (directory / "tokenizer.json").unlink()
    (directory / "tokenizer_config.json").unlink()
    (directory / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(mistral.CheckpointError, match=rf"{re.escape(str(directory / 'tokenizer.model'))}: sentencepiece cannot read it"):
        load_tokenizer(directory, config, "auto")


def test_tokenizer_config_alone_is_not_a_tokenizer(gqa_checkpoint, tmp_path):
    directory = copy_checkpoint(gqa_checkpoint[0], tmp_path / "ckpt")
    config = mistral.read_config(directory)
    write_word_tokenizer(directory, vocab_size=128)
    (directory / "tokenizer.json").unlink()  # settings left, no vocabulary
    with pytest.raises(mistral.CheckpointError, match=rf"{re.escape(str(directory))}: no tokenizer file \(tokenizer\.json or tokenizer\.model"):
        load_tokenizer(directory, config, "directory")
    with pytest.raises(mistral.TokenizerMismatchError, match="32000 tokens"):
        load_tokenizer(directory, config, "auto")  # not the directory's: mistral-common's v1
    (directory / "tokenizer.json").write_text("{not json")
    with pytest.raises(mistral.CheckpointError, match=rf"{re.escape(str(directory))}: transformers cannot load the tokenizer there"):
        load_tokenizer(directory, config, "auto")
    result = subprocess.run(  # the CLI reports it as an error, not a traceback
        [sys.executable, str(REPO / "launch" / "generate.py"), f"--checkpoint={directory}", "--prompt=hi"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"error: {directory}: transformers cannot load the tokenizer there" in result.stderr


def test_shipped_tokenizers_fit_v01_and_v03_vocabularies(v03_checkpoint):
    config = mistral.read_config(v03_checkpoint[0])
    assert load_tokenizer(v03_checkpoint[0], config, "mistral_v3").vocab_size == 32768
    assert load_tokenizer(v03_checkpoint[0], config, "auto").source == str(shipped_tokenizer_path("mistral_v3"))  # no files there: by vocabulary
    with pytest.raises(mistral.TokenizerMismatchError, match="32000 tokens"):
        load_tokenizer(v03_checkpoint[0], config, "mistral_v1")


# ---------------------------------------------------------------- generation end to end


@pytest.fixture(scope="module")
def v01_checkpoint(tmp_path_factory):
    """Vocabulary 32000, so mistral-common's v1 sentencepiece tokenizer belongs to it."""
    directory = tmp_path_factory.mktemp("v01")
    return directory, write_tiny_checkpoint(directory, seed=2, vocab_size=32000, max_shard_size="2MB")


def torch_greedy_text(model, prompt: str, max_new_tokens: int) -> str:
    tokenizer = sentencepiece_tokenizer(shipped_tokenizer_path("mistral_v1"))
    ids = tokenizer.encode(prompt)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_id, pad_token_id=0)
    new = [int(i) for i in out[0, len(ids):]]
    new = new[: new.index(tokenizer.eos_id)] if tokenizer.eos_id in new else new
    return tokenizer.decode(ids + new)[len(tokenizer.decode(ids)):]


def test_generate_cli_matches_pytorch_greedy(v01_checkpoint):
    directory, model = v01_checkpoint
    prompt = "The capital of France is"
    result = subprocess.run(
        [sys.executable, str(REPO / "launch" / "generate.py"), f"--checkpoint={directory}", f"--prompt={prompt}",
         "--max_new_tokens=6", "--dtype=float32", "--tokenizer=mistral_v1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == prompt + torch_greedy_text(model, prompt, 6)


def test_generate_batch_on_tensor_mesh_matches_pytorch(v01_checkpoint):
    directory, model = v01_checkpoint
    prompts = ["p and q implies r", "Once upon a time, in a land far away"]  # unequal lengths: left padding
    completions = generate_text(directory, prompts, max_new_tokens=5, dtype="float32", mesh="tensor", tokenizer="mistral_v1")
    assert completions == [torch_greedy_text(model, p, 5) for p in prompts]


def test_generate_cli_reports_missing_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "launch" / "generate.py"), f"--checkpoint={tmp_path / 'nowhere'}", "--prompt=hi"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode != 0
    assert "does not exist" in result.stderr


def test_too_long_prompt_fails_before_any_weight_is_read(v01_checkpoint, tmp_path):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    shutil.copy(v01_checkpoint[0] / "config.json", directory)
    (directory / "model.safetensors").write_bytes(bytes(64))  # would be "corrupt safetensors header"
    prompt = "The capital of France is " * 50  # > 256 tokens (max_position_embeddings) with the new ones
    with pytest.raises(mistral.CheckpointError, match=r"prompt \(\d+ tokens\) \+ max_new_tokens \(8\) exceeds max_position_embeddings=256 in .*config\.json"):
        generate_text(directory, [prompt], max_new_tokens=8, dtype="float32", tokenizer="mistral_v1")


@pytest.mark.parametrize("preset", ["mistral_7b_v01", "mistral_7b_v03", "small"])
def test_config_round_trips_through_hf_json(preset):
    from transformers import MistralConfig as HFConfig

    config = getattr(mistral.MistralConfig, preset)()
    hf = mistral.loading.config_to_hf(config)
    assert mistral.loading.config_from_hf(hf) == config
    assert mistral.loading.config_from_hf(HFConfig(**hf).to_dict()) == config
