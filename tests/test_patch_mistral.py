"""The Mistral patching study on tiny random checkpoints written by transformers (CPU, float32).

The checkpoint has the real v1 vocabulary size (32000, so the shipped Mistral tokenizer
applies) with a tiny body: 2 layers, 4 query heads on 2 key/value heads, head_dim 24,
sliding window 5 (shorter than the prompts, so the window logic is exercised).
"""

from __future__ import annotations

import dataclasses
import json
import os
import string
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from logic_jax.interp.hooks import block_site
from logic_jax.interp.patching import patching_sweep
from logic_jax.llm import accuracy, circuit as circuit_lib, study, sweeps
from logic_jax.llm.batches import make_batches
from logic_jax.llm.cached import make_suffix_forward, prefill, split_prefix
from logic_jax.llm.prompts import PromptConfig, build_pairs
from logic_jax.llm.tokens import PromptCheckError, tokenize_pairs
from logic_jax.models import mistral
from logic_jax.models.mistral.generate import greedy_decode
from logic_jax.models.mistral.modeling import positions_from_mask

sys.path.insert(0, str(Path(__file__).parent))
from mistral_fixtures import write_tiny_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
P = 5
TOL = dict(rtol=1e-5, atol=1e-5)
TINY_CIRCUIT = {"mover": {"heads": [[0, 1]], "positions": ["query", "last"]}, "decision": {"heads": [[1, 2], [1, 3]], "positions": ["last"]}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny32k")
    model = write_tiny_checkpoint(directory, vocab_size=32000, max_shard_size="5MB")
    config, params = mistral.load_params(directory, jnp.float32)
    tokenizer = mistral.load_tokenizer(directory, config)  # no tokenizer files: mistral-common's v1
    pairs = build_pairs(0, 3, PromptConfig(shots=1))
    tokenized = tokenize_pairs(tokenizer, pairs, positions=P)
    batch = jax.tree.map(jnp.asarray, make_batches(pairs, tokenized, 4)[0])  # 3 pairs + 1 filler row
    return dict(directory=directory, model=model, config=config, params=params, tokenizer=tokenizer, pairs=pairs, batch=batch)


def _prepare(tiny, batch):
    sites = sweeps.sweep_sites(tiny["config"].num_layers, ("head_z", "resid"))
    return sweeps.prepare(tiny["config"], tiny["params"], batch, positions=P, cf_sites=sites)


@pytest.fixture(scope="module")
def prepared(tiny):
    return _prepare(tiny, tiny["batch"])


def test_suffix_forward_equals_the_full_forward(tiny):
    config, params, batch = tiny["config"], tiny["params"], tiny["batch"]
    tokens = np.pad(np.asarray(batch.clean), ((0, 0), (3, 0)))
    mask = np.pad(np.asarray(batch.mask), ((0, 0), (3, 0)))
    mask[1, :7] = 0  # rows with different left padding
    sites = (block_site(1, "hook_z"), block_site(0, "hook_resid_post"), block_site(1, "hook_pattern"))
    full_logits, full = jax.jit(mistral.make_forward(config), static_argnames="cache")(params, tokens, None, sites, attention_mask=mask)

    @jax.jit
    def ours(params, tokens, mask):
        last, prefix, _ = prefill(config, params, tokens, mask)
        forward = make_suffix_forward(config, False)
        return last, forward(params, tokens[:, -P:], None, sites, prefix=split_prefix(prefix, P), positions=positions_from_mask(mask)[:, -P:])

    last, (logits, acts) = ours(params, tokens, mask)
    np.testing.assert_allclose(last, full_logits[:, -1], **TOL)
    np.testing.assert_allclose(logits, full_logits[:, -P:], **TOL)
    for site in sites:
        want = full[site][:, :, -P:] if site.endswith("hook_pattern") else full[site][:, -P:]
        np.testing.assert_allclose(acts[site], want, **TOL, err_msg=site)


def test_patching_with_clean_values_changes_nothing(tiny):
    config, params, batch = tiny["config"], tiny["params"], tiny["batch"]
    same = dataclasses.replace(batch, cf=batch.clean)
    prep = _prepare(tiny, same)
    metric = sweeps.metric_of(same)
    clean = float(metric(prep.clean_logits[:, None]))
    for name in ("head_z", "resid"):
        out = sweeps.run_sweep(name, config, params, prep, metric, chunk_size=None)
        np.testing.assert_allclose(out, np.full_like(out, clean), **TOL, err_msg=name)


def test_attribution_ranks_heads_as_exact_patching(tmp_path):
    """run_attribution's head_z estimates against run_sweep's exact effects on a real query pair batch.

    Not on the ``tiny`` model: its initializer (0.15, for patterns far from uniform) makes the
    clean -> counterfactual change far from linear, and there attribution is only a rough screen
    (rank correlation 0.95 on seed 0, 0.76 on seed 1). With transformers' usual 0.02 the model is
    close to linear over that change, so the first-order estimate should be nearly the whole
    effect: rank correlation 1.0, 1.0, 1.0, 0.98 and Pearson >= 0.99 on seeds 0-3, 3 pairs. A
    wrong site, sign, head order or gradient (e.g. of a wrong metric) breaks both correlations.
    """
    from scipy import stats

    write_tiny_checkpoint(tmp_path, vocab_size=32000, max_shard_size="5MB", initializer_range=0.02)
    config, params = mistral.load_params(tmp_path, jnp.float32)
    pairs = build_pairs(0, 3, PromptConfig(shots=1))
    tokenized = tokenize_pairs(mistral.load_tokenizer(tmp_path, config), pairs, positions=P)
    batch = jax.tree.map(jnp.asarray, make_batches(pairs, tokenized, 3)[0])
    prep = sweeps.prepare(config, params, batch, positions=P, cf_sites=sweeps.sweep_sites(config.num_layers, ("head_z",)))
    metric = sweeps.metric_of(batch)
    exact = sweeps.run_sweep("head_z", config, params, prep, metric, chunk_size=None) - float(metric(prep.clean_logits[:, None]))
    attributed = sweeps.run_attribution(config, params, prep, metric)
    assert attributed.shape == exact.shape == (config.num_layers, config.num_heads)
    assert np.ptp(exact) > 0.05  # the heads' effects differ, so there is a ranking to agree on
    assert stats.spearmanr(exact.ravel(), attributed.ravel())[0] > 0.9, (exact, attributed)
    assert np.corrcoef(exact.ravel(), attributed.ravel())[0, 1] > 0.95, (exact, attributed)


def test_full_patching_reproduces_the_counterfactual(tiny, prepared):
    config, params, batch = tiny["config"], tiny["params"], tiny["batch"]
    metric = sweeps.metric_of(batch)
    clean, cf = float(metric(prepared.clean_logits[:, None])), float(metric(prepared.cf_logits[:, None]))
    assert abs(clean - cf) > 1e-3
    # The residual stream entering layer 0 at all of the last P positions: the whole difference
    # of a query pair (it differs only at QUERY), so the run is the counterfactual one.
    values = {block_site(l, "hook_resid_pre"): prepared.cf_values[block_site(l, "hook_resid_pre")] for l in range(config.num_layers)}
    by_layer = patching_sweep(
        make_suffix_forward(config, True), params, prepared.suffix, values, metric, "hook_resid_pre", ("layer",),
        layers=config.num_layers, forward_kwargs=prepared.forward_kwargs,
    )
    np.testing.assert_allclose(by_layer[0], cf, **TOL)
    # Every head output patched (nothing kept): the last position only reads the patched heads.
    circuit = circuit_lib.parse_circuit(TINY_CIRCUIT).validate(config)
    lds = circuit_lib.circuit_lds(circuit, config, params, prepared, metric, batch, P)
    assert circuit.variants()[1] == "none"
    np.testing.assert_allclose(lds[1], cf, **TOL)
    scores = circuit_lib.scores(circuit, lds, 3.0, clean / 3, cf / 3)
    assert scores["none"]["normalized"] == pytest.approx(0.0, abs=1e-5)
    assert scores["none"]["of_clean"] == pytest.approx(cf / clean, rel=1e-5)  # the paper's share: LD_kept / LD_clean
    # LD_clean = LD_cf (rule_order pairs under a short sliding window): no normalised share, not a 0/0 NaN.
    equal = circuit_lib.scores(circuit, lds, 3.0, cf / 3, cf / 3)
    assert equal["none"]["normalized"] is None and equal["none"]["ld"] == pytest.approx(cf / 3) and equal["none"]["of_clean"] == pytest.approx(1.0)


def test_circuit_shares_are_the_papers_and_the_normalised_one():
    """The paper's "restores 90% of the clean LD" is LD_kept / LD_clean (the authors' notebook); the
    normalised share counts from LD_cf. With LD_clean 2 and LD_cf -2, an LD of 0 keeps 0% of the
    clean LD but is halfway from the counterfactual."""
    circuit = circuit_lib.parse_circuit(TINY_CIRCUIT)
    names = circuit.variants()
    s = circuit_lib.scores(circuit, np.array([1.6, 0.0] + [0.0] * (len(names) - 2)), 1.0, 2.0, -2.0)
    assert s[names[0]]["of_clean"] == pytest.approx(0.8) and s[names[0]]["normalized"] == pytest.approx(0.9)
    assert s[names[1]]["of_clean"] == 0.0 and s[names[1]]["normalized"] == pytest.approx(0.5)
    assert circuit_lib.scores(circuit, np.zeros(len(names)), 1.0, 0.0, -2.0)[names[0]]["of_clean"] is None  # LD_clean = 0
    assert circuit_lib.protocol_note("query") is None and "not the paper's protocol" in circuit_lib.protocol_note("fact")


@pytest.fixture(scope="module")
def unwindowed(tmp_path_factory):
    """The tiny model without a sliding window: the last positions see the facts and the rules."""
    directory = tmp_path_factory.mktemp("tiny32k_nowindow")
    write_tiny_checkpoint(directory, vocab_size=32000, max_shard_size="5MB", sliding_window=None)
    config, params = mistral.load_params(directory, jnp.float32)
    return dict(directory=directory, config=config, params=params, tokenizer=mistral.load_tokenizer(directory, config))


@pytest.mark.parametrize("kind", ["fact", "rule_order"])
def test_fact_and_rule_order_pairs_differ_and_nothing_kept_is_the_counterfactual(unwindowed, kind):
    """With window 5 these pairs are trivial (the last 5 positions see neither facts nor rules)."""
    config, params = unwindowed["config"], unwindowed["params"]
    pairs = build_pairs(0, 3, PromptConfig(shots=1, kind=kind))
    batch = jax.tree.map(jnp.asarray, make_batches(pairs, tokenize_pairs(unwindowed["tokenizer"], pairs, positions=P), 4)[0])
    prepared = _prepare(unwindowed, batch)
    metric = sweeps.metric_of(batch)
    clean, cf = float(metric(prepared.clean_logits[:, None])), float(metric(prepared.cf_logits[:, None]))
    assert abs(clean - cf) > 1e-3
    circuit = circuit_lib.parse_circuit(TINY_CIRCUIT).validate(config)
    lds = circuit_lib.circuit_lds(circuit, config, params, prepared, metric, batch, P)
    np.testing.assert_allclose(lds[1], cf, **TOL)  # every head's output at the last P positions from the counterfactual run
    assert not np.allclose(lds[0], cf, **TOL)  # the circuit alone kept clean moves it


def test_head_z_equals_pytorch_forward_hooks(tiny, prepared):
    """The sweep against a plain PyTorch loop: a pre-hook on o_proj writes the counterfactual z."""
    config, batch, model = tiny["config"], tiny["batch"], tiny["model"]
    real = 3
    clean, cf = (torch.tensor(np.asarray(t)[:real], dtype=torch.long) for t in (batch.clean, batch.cf))
    assert np.asarray(batch.mask)[:real].all()  # equal lengths: no padding needed
    a, b = np.asarray(batch.clean_target)[:real], np.asarray(batch.cf_target)[:real]
    d = config.head_dim
    cf_z = {}
    hooks = [layer.self_attn.o_proj.register_forward_pre_hook(lambda m, args, l=l: cf_z.__setitem__(l, args[0].clone())) for l, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        model(cf)
    for h in hooks:
        h.remove()

    def patched_ld(layer: int, head: int) -> float:
        def hook(module, args):
            z = args[0].clone()
            z[:, -P:, head * d : (head + 1) * d] = cf_z[layer][:, -P:, head * d : (head + 1) * d]
            return (z,)

        handle = model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(hook)
        try:
            with torch.no_grad():
                logits = model(clean).logits[:, -1].numpy()
        finally:
            handle.remove()
        return float(np.sum(logits[np.arange(real), a] - logits[np.arange(real), b]))

    ours = sweeps.run_sweep("head_z", config, tiny["params"], prepared, sweeps.metric_of(batch), chunk_size=None)
    reference = np.array([[patched_ld(l, h) for h in range(config.num_heads)] for l in range(config.num_layers)])
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)
    assert np.ptp(reference) > 1e-3  # the heads do differ


def test_cached_greedy_decoding_equals_generate(tiny):
    config, params, batch = tiny["config"], tiny["params"], tiny["batch"]
    ours = accuracy.greedy(config, params, batch.clean, batch.mask, 6)
    reference = greedy_decode(mistral.make_forward(config), params, batch.clean, batch.mask, 6)
    np.testing.assert_array_equal(ours, reference)


def test_circuit_specs_are_checked(tiny):
    config = tiny["config"]
    with pytest.raises(circuit_lib.CircuitError, match=r"family 'locator': head \(12, 9\) is outside the model \(2 layers x 4 heads\)"):
        circuit_lib.parse_circuit(None).validate(config)
    with pytest.raises(circuit_lib.CircuitError, match="positions must be a non-empty subset"):
        circuit_lib.parse_circuit({"x": {"heads": [[0, 0]], "positions": ["middle"]}})
    with pytest.raises(circuit_lib.CircuitError, match="not a JSON object"):
        circuit_lib.parse_circuit("{not json")
    assert circuit_lib.parse_circuit(json.dumps(TINY_CIRCUIT)).heads == ((0, 1), (1, 2), (1, 3))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device is plenty
    return subprocess.run([sys.executable, str(REPO / "launch" / "patch_mistral.py"), *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("heads, bad", [("12", "'12'"), ("0.1,1.2.3", "'1.2.3'"), ("0.x", "'0.x'")])
def test_attention_heads_must_be_layer_dot_head(tmp_path, heads, bad):
    proc = run_cli(f"--checkpoint={tmp_path / 'nowhere'}", f"--out={tmp_path / 'out'}", f"--attention_heads={heads}")
    assert proc.returncode != 0
    assert f"--attention_heads: item {bad} is not LAYER.HEAD" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # ~80 s on 2 shared cores: a dozen compilations
def test_command_end_to_end(tiny, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        f"--checkpoint={tiny['directory']}", f"--out={out}", "--num_pairs=3", "--shots=1", "--seed=0", "--positions=5",
        "--batch_size=2", "--chunk_size=4", "--dtype=float32", f"--circuit={json.dumps(TINY_CIRCUIT)}", "--noprogress",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    config, tokenizer = tiny["config"], tiny["tokenizer"]
    layers, heads, kv = config.num_layers, config.num_heads, config.num_kv_heads
    shapes = {"head_z": (layers, heads), "head_q": (layers, heads), "head_k": (layers, kv), "head_v": (layers, kv), "resid": (layers, P), "attn_out": (layers,), "mlp_out": (layers,), "head_z_attribution": (layers, heads), "clean_logits": (3, 32000)}
    for name, shape in shapes.items():
        array = np.load(out / f"{name}.npy")
        assert array.shape == shape and np.isfinite(array).all(), name
    assert np.load(out / "clean_logits.npy").dtype == np.float32
    records = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for record, pair in zip(records, build_pairs(0, 3, PromptConfig(shots=1))):
        assert record["clean"] == pair.clean_text and record["counterfactual"] == pair.cf_text
        assert tokenizer.decode([record["clean_target"]]) == pair.clean_target == pair.clean.first_letter
        assert tokenizer.decode([record["counterfactual_target"]]) == pair.cf_target
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["circuit"]["scores"]) == {"circuit", "none", "without_mover", "without_decision"} and summary["circuit"]["note"] is None
    assert f"circuit keeps {summary['circuit']['scores']['circuit']['of_clean']:.3f} of the clean LD (LD_kept / LD_clean" in proc.stdout
    assert summary["accuracy"]["clean"]["n"] == 3 and summary["logit_difference"]["effect_kind"] == "normalized"
    assert set(summary["attention"]) == {"0.1", "1.2", "1.3"}
    report = (out / "report.md").read_text()
    for image in ("head_z.png", "head_q.png", "head_k.png", "head_v.png", "resid.png"):
        assert (out / image).stat().st_size > 0 and f"]({image})" in report
    # The same run's clean logits equal the port's forward at the last position.
    tokens = np.array([tokenizer.encode(r["clean"]) for r in records], np.int32)
    logits, _ = mistral.make_forward(config)(tiny["params"], tokens)
    np.testing.assert_allclose(np.load(out / "clean_logits.npy"), logits[:, -1], rtol=1e-4, atol=1e-4)


def write_char_tokenizer(directory: Path) -> int:
    """A character-level transformers tokenizer: ' T' is two tokens. Returns its size."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\r\x0b\x0c"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    backend = Tokenizer(models.BPE(vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(str(directory))
    return len(vocab)


def test_study_refuses_an_unwritable_out_before_loading_weights(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(study, "load_params", lambda *a, **k: pytest.fail("weights loaded before the output check"))
    cfg = study.StudyConfig(num_pairs=2, shots=1, circuit=TINY_CIRCUIT)
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    for out in (in_the_way, in_the_way / "out"):  # a file, and a directory under a file
        with pytest.raises(study.OutputError, match=rf"--out {out}: cannot create the output directory"):
            study.run_study(tiny["directory"], out, cfg, progress=False)
    proc = run_cli(f"--checkpoint={tiny['directory']}", f"--out={in_the_way}", "--num_pairs=2", "--shots=1", f"--circuit={json.dumps(TINY_CIRCUIT)}")
    assert proc.returncode != 0 and f"error: --out {in_the_way}: cannot create" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(study.OutputError, match="not writable"):
            study.run_study(tiny["directory"], locked, cfg, progress=False)


def test_study_refuses_a_tokenizer_that_splits_letters(tmp_path, monkeypatch):
    directory = tmp_path / "chars"
    size = write_char_tokenizer(directory)
    write_tiny_checkpoint(directory, vocab_size=size)
    monkeypatch.setattr(study, "load_params", lambda *a, **k: pytest.fail("weights loaded before the prompt checks"))
    cfg = study.StudyConfig(num_pairs=2, shots=1, circuit=TINY_CIRCUIT)
    with pytest.raises(PromptCheckError, match=r"pair 0 \(query\), clean prompt: answer letter '\w' is not one token after 'Answer:'"):
        study.run_study(directory, tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_model_that_cannot_tell_the_pairs_apart_gives_undefined_effects_not_numbers(tiny, tmp_path):
    """All-zero weights: LD_clean = LD_cf = 0, so every normalised effect is 0/0."""
    zeros = jax.tree.map(jnp.zeros_like, tiny["params"])
    cfg = study.StudyConfig(num_pairs=3, shots=1, positions=P, batch_size=4, sweeps=("head_z", "resid"), circuit=TINY_CIRCUIT, accuracy=False)
    messages = []
    summary = study.run_study(tiny["directory"], tmp_path, cfg, dtype="float32", progress=False, log=messages.append, params=zeros)
    assert summary["logit_difference"]["effects_defined"] is False
    assert any("undefined" in m for m in messages), messages
    assert summary["top_heads"] == {} and summary["attribution"] is None
    assert all(s["of_clean"] is None and s["normalized"] is None for s in summary["circuit"]["scores"].values())
    assert np.isnan(np.load(tmp_path / "head_z.npy")).all()
    json.loads((tmp_path / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"summary.json holds {c}"))
    report = (tmp_path / "report.md").read_text()
    assert "normalised effects are undefined" in report and "head_z.png" not in report and not (tmp_path / "head_z.png").exists()
    assert set(os.listdir(tmp_path)) <= set(study.output_files())  # what a rerun would clear


def test_a_rerun_clears_the_earlier_studys_files_only(tmp_path):
    for name in ("head_z.npy", "head_z_attribution.npy", "attribution_head_z.png", "summary.json", "my_notes.md"):
        (tmp_path / name).write_text("earlier")
    assert study.remove_earlier_outputs(tmp_path) == 4
    assert os.listdir(tmp_path) == ["my_notes.md"]


def test_prompts_longer_than_the_models_positions_are_refused_before_the_weights(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(study, "load_params", lambda *a, **k: pytest.fail("weights loaded before the length check"))
    cfg = study.StudyConfig(num_pairs=2, shots=8, circuit=TINY_CIRCUIT)  # past the tiny config's 256 positions
    with pytest.raises(study.PromptError, match=r"the prompts need \d+ positions \(\d+ tokens \+ \d+ decoded for the accuracy\), past max_position_embeddings=256"):
        study.run_study(tiny["directory"], tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists()
