"""Bad input to the Python APIs researchers call: an error naming the culprit, never a wrong answer
(an embedding lookup clamps a bad id; a float mask of 0.5 patches as True) nor a crash inside XLA."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from logic_jax.interp import interventions as iv
from logic_jax.interp.hooks import Patch
from logic_jax.interp.pairs import context_tokens, make_pairs
from logic_jax.interp.patching import patching_sweep
from logic_jax.interp.metrics import LogitDiff
from logic_jax.models import gpt, mistral
from logic_jax.models.mistral.generate import generate_text
from logic_jax.models.mistral.loading import CheckpointError, read_safetensors_header
from logic_jax.problem.config import ProblemConfig

PROBLEM = ProblemConfig(depth=2)
CFG = gpt.GPTConfig(n_layers=2, n_heads=2, d_model=16, d_mlp=32)
FORWARD = gpt.make_forward(CFG)


@pytest.fixture(scope="module")
def params():
    return gpt.init_params(jax.random.PRNGKey(0), CFG)


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(jax.random.PRNGKey(1), PROBLEM, 4, "query")


def test_token_ids_outside_the_vocabulary_or_of_another_rank_or_dtype_are_refused(params):
    tokens = jnp.zeros((1, 4), jnp.int32)
    for bad, message in ((tokens + CFG.vocab_size, r"token ids must be in 0\.\.44, got 45\.\.45"), (tokens - 1, r"got -1\.\.-1"),
                         (tokens[0], r"integer array \[batch, pos\], got int32 of shape \(4,\)"), (tokens.astype(jnp.float32), "got float32")):
        with pytest.raises(ValueError, match=message):
            FORWARD(params, bad)
    with pytest.raises(ValueError, match="got float32"):  # the rank and dtype are checked under jit too
        jax.jit(FORWARD)(params, tokens.astype(jnp.float32))


def test_under_jit_a_bad_token_id_makes_its_sequence_nan(params, tiny_mistral):
    """Under jit the ids are not concrete, so check_tokens cannot refuse them: the lookup used to
    clamp an id past the vocabulary to the last row and wrap -1 to it, finite and wrong. NaN
    reaches the earlier positions too (0 attention times a NaN value is NaN), not the other
    sequences of the batch."""
    config, mistral_params = mistral.load_params(tiny_mistral, dtype=jnp.float32)
    for forward, p, vocab in ((jax.jit(FORWARD), params, CFG.vocab_size), (jax.jit(mistral.make_forward(config)), mistral_params, config.vocab_size)):
        tokens = jnp.array([[1, 2, 3, 4], [1, 2, 3, 4]], jnp.int32)
        assert not np.isnan(np.asarray(forward(p, tokens)[0])).any()
        for bad in (vocab, -1):
            logits = np.asarray(forward(p, tokens.at[0, 2].set(bad))[0])
            assert np.isnan(logits[0]).all() and not np.isnan(logits[1]).any()


def test_a_patch_that_does_not_fit_its_site_is_named(params, pairs):
    tokens = context_tokens(pairs[0], PROBLEM)
    with pytest.raises(ValueError, match=r"Patch.value of shape \(3, 5\) does not broadcast against blocks.0.hook_resid_pre's activation \(4, \d+, 16\)"):
        FORWARD(params, tokens, {"blocks.0.hook_resid_pre": Patch(value=jnp.zeros((3, 5)))})
    with pytest.raises(TypeError, match=r"Patch.mask at blocks.0.hook_resid_pre must be boolean, got float32"):
        FORWARD(params, tokens, {"blocks.0.hook_resid_pre": Patch(value=0.0, mask=jnp.full((16,), 0.5))})
    with pytest.raises(TypeError, match=r"patches\['blocks.0.hook_resid_pre'\] must be a Patch"):
        FORWARD(params, tokens, {"blocks.0.hook_resid_pre": jnp.zeros(16)})
    empty = {"blocks.0.hook_resid_pre": jnp.zeros((0, tokens.shape[1], 16))}
    with pytest.raises(ValueError, match="holds no examples"):
        iv.mean_ablate(empty, "blocks.0.hook_resid_pre")


def test_problems_of_another_depth_and_layers_that_are_not_ints_are_refused(params, pairs):
    with pytest.raises(ValueError, match=r"problems are \d+ tokens long, but depth 5's are \d+"):
        context_tokens(pairs[0], ProblemConfig(depth=5))
    clean, cf = (context_tokens(b, PROBLEM) for b in pairs)
    metric = LogitDiff(jnp.full((4,), clean.shape[1] - 1), pairs[0].first_answer, pairs[1].first_answer)
    for layers in ([1.5], True):
        with pytest.raises(ValueError, match="layers must be the number of layers or a list of layer indices"):
            patching_sweep(FORWARD, params, clean, cf, metric, "hook_z", ("layer", "head"), layers=layers)


@pytest.fixture(scope="module")
def tiny_mistral(tmp_path_factory):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from mistral_fixtures import write_tiny_checkpoint

    directory = tmp_path_factory.mktemp("tiny_mistral")
    write_tiny_checkpoint(directory, vocab_size=32000, max_shard_size="5MB")
    return directory


def test_generation_arguments_are_checked_before_the_weights(tiny_mistral):
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1, got 0"):  # 0 aborted the process inside XLA
        generate_text(tiny_mistral, ["a"], max_new_tokens=0)
    with pytest.raises(ValueError, match="prompts must be a non-empty list of strings"):  # a str was a list of characters
        generate_text(tiny_mistral, "a b", max_new_tokens=1)
    with pytest.raises(ValueError, match="load dtype must be a floating type"):  # int32 truncated every weight
        mistral.load_params(tiny_mistral, jnp.int32)


def test_config_and_header_values_are_refused_by_name(tiny_mistral, tmp_path):
    hf = json.loads((tiny_mistral / "config.json").read_text())
    rope = dict(hf["rope_parameters"], rope_theta=float("inf"))  # an infinite theta loaded, and gave logits 3.0 off
    for key, value, message in (("rope_parameters", rope, "rope_theta"), ("architectures", "xMistralForCausalLMx", "architectures"),
                                ("tie_word_embeddings", "false", "tie_word_embeddings")):
        with pytest.raises(CheckpointError, match=message):
            mistral.config_from_hf(dict(hf, **{key: value}))
    bad = tmp_path / "config.json"
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(CheckpointError, match=r"config.json: not valid JSON"):
        mistral.read_config(tmp_path)
    header = json.dumps({"w": {"dtype": "F32", "shape": 128, "data_offsets": [0, 4]}}).encode()
    (tmp_path / "x.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(CheckpointError, match=r"tensor 'w' lacks a dtype, a shape or two data_offsets"):
        read_safetensors_header(tmp_path / "x.safetensors")


def test_metric_indices_past_the_end_are_nan_and_a_batch_mismatch_is_named():
    from logic_jax.interp.metrics import logit_diff

    logits = jnp.arange(30, dtype=jnp.float32).reshape(2, 3, 5)
    np.testing.assert_array_equal(logit_diff(logits, jnp.array([2, 1]), jnp.array([1, 0]), jnp.array([0, 2])), [1.0, -2.0])
    assert np.isnan(logit_diff(logits, jnp.array([3, 1]), jnp.array([1, 0]), jnp.array([0, 5]))).all()  # were clamped to 2 and 4
    with pytest.raises(ValueError, match=r"pos of shape \(3,\) does not match the batch of 2"):
        LogitDiff(jnp.array([1, 1, 1]), jnp.array([1, 0]), jnp.array([0, 2]))(logits)


@pytest.mark.parametrize("positions, message", [([], "positions is empty"), ([None], "positions must be ints or a boolean mask"), ([2**40], "positions must be ints or a boolean mask")])
def test_bad_positions_name_the_site(positions, message):
    with pytest.raises(ValueError, match=rf"site 'blocks.0.hook_resid_pre': {message}"):
        iv.zero_ablate("blocks.0.hook_resid_pre", (2, 8, 16), positions=positions)


def test_pairs_of_other_lengths_are_named(pairs):
    from logic_jax.interp.pairs import logit_diff_metric
    from logic_jax.problem.sampler import sample

    other = sample(jax.random.PRNGKey(2), PROBLEM, 3)
    with pytest.raises(ValueError, match="4 clean problems but 3 counterfactual ones"):
        logit_diff_metric(pairs[0], other)
