"""The analyses recover patterns planted in hand-built models.

* ``planted_gpt``: a GPT whose weights implement a two-step circuit: in layer 2 (blocks.1)
  head 0, QUERY attends to itself and copies its letter (a "routing signal"); in layer 3
  (blocks.2) head 0, ANSWER attends to QUERY and copies that letter into the logits. Every
  other head and MLP writes nothing. So it predicts the QUERY letter at ANSWER.
* ``with_plant``: any forward with extra patches computed from the tokens (which chain is
  queried, the operator, the linear chain's source), to plant an attention pattern, a
  routing signal or a probe-readable letter exactly where the paper finds them.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from logic_jax.analysis import attention, causal, common, figures, lookup, pipeline, probes, report, routing
from logic_jax.interp.hooks import Patch
from logic_jax.interp.interventions import merge_patches
from logic_jax.interp.pairs import make_pairs
from logic_jax.models import gpt
from logic_jax.problem import format as fmt
from logic_jax.problem.config import ProblemConfig

DEPTH = 3
PROBLEM = ProblemConfig(depth=DEPTH)
QUERY, ANSWER = fmt.query_pos(DEPTH), fmt.answer_pos(DEPTH)
CFG = gpt.GPTConfig(n_layers=3, n_heads=2, d_model=64, d_mlp=8, max_len=fmt.seq_len(DEPTH))
LETTER = 2  # letter t lives on residual dimension LETTER + t; 0 marks ANSWER, 1 marks QUERY


def planted_params():
    p = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), gpt.abstract_params(CFG))
    for ln in [p["ln_final"]] + [p["blocks"][i][n] for i in range(CFG.n_layers) for n in ("ln1", "ln2")]:
        ln["scale"][:] = 1.0
    for t in range(fmt.VOCAB_SIZE):  # one-hot embeddings: letters on 2..27, other tokens on 28..
        p["W_E"][t, LETTER + t] = 3.0
    p["W_pos"][ANSWER, 0] = p["W_pos"][QUERY, 1] = 10.0
    letters = np.arange(fmt.NUM_LETTERS)
    for block, (query_dim, key_dim, scale) in ((1, (1, 1, 1.0)), (2, (0, 1, 2.0))):  # blocks.1: QUERY -> QUERY; blocks.2: ANSWER -> QUERY
        a = p["blocks"][block]["attn"]
        a["W_Q"][query_dim, 0, 0] = a["W_K"][key_dim, 0, 0] = scale
        a["W_V"][LETTER + letters, 0, letters] = 1.0
        a["W_O"][0, letters, LETTER + letters] = 5.0
    p["W_U"][LETTER + letters, letters] = 1.0
    return jax.tree.map(jnp.asarray, p)


FORWARD = common.forward_for(CFG)


@pytest.fixture(scope="module")
def planted():
    return planted_params()


def query_is_answer(batch):
    """The planted model answers the QUERY letter: score it against that."""
    return batch.replace(first_answer=batch.tokens[:, QUERY])


@pytest.fixture(scope="module")
def samples():
    """Per query type: 48 problems for the attention tests, 312 + 156 for the probes (one sampler call each)."""
    return {name: common.split(common.problems(jax.random.PRNGKey(3), PROBLEM, 516, query=q), (48, 312, 156)) for name, q in (("linear", "linear"), ("LogOp", "logop"))}


@pytest.fixture(scope="module")
def batches(samples):
    return {name: parts[0] for name, parts in samples.items()}


# --- A forward with planted patches ---------------------------------------------------------------
def structure(tokens):
    """From context tokens: (query letter, operator position, is_and, the LogOp chain is queried, linear source)."""
    rows = jnp.arange(tokens.shape[0])
    q = tokens[:, QUERY]
    op_pos = jnp.argmax((tokens == fmt.AND) | (tokens == fmt.OR), axis=1)
    is_and = tokens[rows, op_pos] == fmt.AND
    is_logop = tokens[rows, op_pos + 3] == q  # x OP y IMPLIES z: z is 3 after OP
    letter = q
    for _ in range(DEPTH - 1):  # follow `p IMPLIES letter` back to the chain's source
        hit = (tokens[:, 1:-1] == fmt.IMPLIES) & (tokens[:, 2:] == letter[:, None])
        letter = tokens[rows, jnp.argmax(hit, axis=1)]
    return q, op_pos, is_and, is_logop, letter


def with_plant(plant):
    base = common.forward_for(gpt.GPTConfig(n_layers=3, n_heads=2, d_model=32, d_mlp=32, max_len=fmt.seq_len(DEPTH)))

    def forward(params, tokens, patches=None, cache=()):
        return base(params, tokens, merge_patches(patches or {}, plant(tokens)), cache)

    return forward


def _attend(tokens):
    """Layer-3 head 0 at ANSWER: onto QUERY for linear queries, onto the operator for LogOp ones."""
    _, op_pos, _, is_logop, _ = structure(tokens)
    b, n = tokens.shape
    target = jnp.where(is_logop, op_pos, QUERY)
    value = jax.nn.one_hot(target, n)[:, None, None, :]
    mask = (jnp.arange(2) == 0)[None, :, None, None] & (jnp.arange(n) == n - 1)[None, None, :, None]
    return {"blocks.2.attn.hook_pattern": Patch(value=value, mask=mask)}


ROUTE_DIRS = np.linalg.qr(np.random.default_rng(0).normal(size=(32, 3)))[0].T  # orthonormal: linear, LogOp, AND


def _route(tokens):
    """A routing signal at QUERY: one direction per chain, plus an AND/OR component for LogOp queries."""
    _, _, is_and, is_logop, _ = structure(tokens)
    d = jnp.asarray(ROUTE_DIRS)
    vec = jnp.where(is_logop[:, None], d[1] + 0.5 * jnp.where(is_and[:, None], d[2], -d[2]), d[0]) * 200.0
    add = vec[:, None, :] * (jnp.arange(tokens.shape[1]) == QUERY)[None, :, None]
    return {"blocks.1.hook_attn_out": Patch(add=add)}


LETTER_DIRS = np.random.default_rng(1).normal(size=(fmt.NUM_LETTERS, 32))


def _probe(tokens):
    """The linear chain's source letter, written linearly into the residual after layer 2 at QUERY (linear queries only)."""
    _, _, _, is_logop, source = structure(tokens)
    vec = jnp.asarray(LETTER_DIRS)[source] * 5.0 * (~is_logop)[:, None]
    add = vec[:, None, :] * (jnp.arange(tokens.shape[1]) == QUERY)[None, :, None]
    return {"blocks.1.hook_resid_post": Patch(add=add)}


ATTEND, ROUTE, PROBE = with_plant(_attend), with_plant(_route), with_plant(_probe)


@pytest.fixture(scope="module")
def random_params():
    return gpt.init_params(jax.random.PRNGKey(1), gpt.GPTConfig(n_layers=3, n_heads=2, d_model=32, d_mlp=32, max_len=fmt.seq_len(DEPTH)))


def test_structure_helper_matches_the_sampler(batches):
    for name, b in batches.items():
        _, _, is_and, is_logop, source = structure(common.context(b))
        np.testing.assert_array_equal(is_logop, b.query_logop)
        np.testing.assert_array_equal(is_and, b.is_and)
        if name == "linear":
            np.testing.assert_array_equal(source, b.first_answer)


# --- Claim 3 / 5: attention ------------------------------------------------------------------------
def test_planted_weights_attend_answer_to_query(planted, batches):
    summaries = {n: attention.summarize(attention.answer_rows(FORWARD, planted, b, 2), b) for n, b in batches.items()}
    for s in summaries.values():
        assert s["onto_query"][0] > 0.99  # head 0 reads QUERY
        assert s["onto_query"][1] == pytest.approx(1 / (ANSWER + 1), abs=1e-4)  # head 1: uniform over the context
        np.testing.assert_allclose(s["regions"].sum(1), 1.0, rtol=1e-5)
    c3 = attention.claim3(summaries["linear"], summaries["LogOp"])
    assert c3["head"] == 0 and c3["linear_head"] > 0.99 and c3["logop_head"] > 0.99


def test_planted_pattern_separates_linear_and_logop(random_params, batches):
    s = {n: attention.summarize(attention.answer_rows(ATTEND, random_params, b, 2), b) for n, b in batches.items()}
    c3 = attention.claim3(s["linear"], s["LogOp"])
    assert c3["head"] == 0 and c3["linear_head"] == pytest.approx(1.0, abs=1e-6) and c3["logop_head"] == pytest.approx(0.0, abs=1e-6)
    c5 = attention.claim5(s["LogOp"])
    assert c5["operator_head"] == 0 and c5["operator"] == pytest.approx(1.0, abs=1e-6)


def test_region_masks_partition_the_context(batches):
    for b in batches.values():
        masks = attention.region_masks(b)
        np.testing.assert_array_equal(masks.sum(1), 1)  # every position in exactly one region
        tokens = np.asarray(common.context(b))
        rows = np.arange(len(tokens))
        assert np.all(masks[rows, 0, QUERY])
        op = masks[:, attention.REGIONS.index("operator")]
        assert np.all(np.isin(tokens[op], (fmt.AND, fmt.OR))) and np.all(op.sum(1) == 1)
        fact = masks[:, attention.REGIONS.index("first-token fact")]
        assert np.all(fact.sum(1) == 2)
        assert np.all(tokens[fact].reshape(-1, 2)[:, 0] == np.asarray(b.first_answer))
        assert np.all(np.isin(tokens[fact].reshape(-1, 2)[:, 1], (fmt.TRUE, fmt.FALSE)))


def _feeds_the_operator(row, letter):
    """At depth 3: ``letter IMPLIES m`` is a rule and m is an operand of the LogOp rule."""
    op = int(np.flatnonzero(np.isin(row, (fmt.AND, fmt.OR)))[0])
    at = np.flatnonzero((row[:-2] == letter) & (row[1:-1] == fmt.IMPLIES))
    return len(at) == 1 and row[at[0] + 2] in (row[op - 1], row[op + 1])


def test_fact_regions_separate_the_branch_sources_from_the_linear_source(batches):
    """Claim 5 is about the branch sources' facts: the linear chain's is a region of its own."""
    regions = {n: attention.REGIONS.index(n) for n in ("first-token fact", "other branch fact", "linear fact")}
    for name, b in batches.items():
        masks, tokens = attention.region_masks(b), np.asarray(common.context(b))
        letters = {n: tokens[masks[:, i]].reshape(len(tokens), -1, 2)[:, :, 0] for n, i in regions.items()}
        if name == "linear":  # the first token is the linear source: both branch sources are "other"
            assert letters["linear fact"].shape[1] == 0 and letters["other branch fact"].shape[1] == 2
        else:
            assert letters["linear fact"].shape[1] == 1 and letters["other branch fact"].shape[1] == 1
        branch = letters["other branch fact"] if name == "linear" else np.concatenate([letters["first-token fact"], letters["other branch fact"]], 1)
        assert all(_feeds_the_operator(row, l) for row, ls in zip(tokens, branch) for l in ls)
        assert not any(_feeds_the_operator(row, l) for row, ls in zip(tokens, letters["linear fact"]) for l in ls)


# --- Claim 2: routing ------------------------------------------------------------------------------
def test_cluster_scores_on_known_matrices():
    labels = np.array([0, 0, 0, 1, 1])
    v = np.array([[1, 0], [2, 0], [3, 0], [0, 1], [0, 5]], float)
    cos = routing.cosine_matrix(v)
    assert routing.separation(cos, labels) == pytest.approx(1.0)
    assert routing.silhouette(cos, labels) == pytest.approx(1.0)
    assert routing.separation(np.ones((5, 5)), labels) == pytest.approx(0.0)
    with pytest.raises(common.AnalysisError, match="at least 2 groups"):
        routing.separation(cos, np.array([0, 0, 0, 0, 1]))


def test_planted_routing_signal_separates_clusters(random_params, batches):
    both = common.concat(batches["linear"], batches["LogOp"])
    planted = routing.scores(routing.routing_vectors(ROUTE, random_params, both, 1), both.query_logop, both.is_and)
    # Within LogOp, OR and AND vectors have cosine 0.6, so within-group cosine is (1 + 0.8) / 2 = 0.9 and between 0.
    assert planted["chain_separation"] == pytest.approx(0.9, abs=0.02) and planted["chain_silhouette"] > 0.8
    assert planted["op_separation"] > 0.3 and planted["op_silhouette"] > 0.3
    # Without the plant an untrained model's signal does not cluster by chain.
    forward = common.forward_for(gpt.GPTConfig(n_layers=3, n_heads=2, d_model=32, d_mlp=32, max_len=fmt.seq_len(DEPTH)))
    plain = routing.scores(routing.routing_vectors(forward, random_params, both, 1), both.query_logop, both.is_and)
    assert abs(plain["chain_separation"]) < 0.1 and plain["chain_silhouette"] < 0.2
    order = routing.display_order(both.query_logop, both.is_and, limit=40)
    assert len(order) <= 41 and not np.asarray(both.query_logop)[order[0]]


# --- Claim 4: probes -------------------------------------------------------------------------------
def test_probe_reads_a_linear_code_and_not_noise():
    rng = np.random.default_rng(0)
    y_tr, y_te = rng.integers(0, 26, 400), rng.integers(0, 26, 200)
    code = rng.normal(size=(26, 16))
    feats = lambda y, s: np.stack([code[y] * s + rng.normal(size=(len(y), 16)), rng.normal(size=(len(y), 16))])[:, None].astype(np.float32)  # noqa: E731
    out = probes.probe_grid(feats(y_tr, 3.0), y_tr, feats(y_te, 3.0), y_te, steps=100)
    assert out["test"].shape == (2, 1)
    assert out["test"][0, 0] > 0.95 and out["test"][1, 0] < 0.15


def test_probe_features_of_a_bfloat16_model_are_standardised_in_float32():
    # A residual stream with a large offset: a bfloat16 mean of it is off by a bfloat16 step (2 at 300).
    rng = np.random.default_rng(1)
    y = rng.integers(0, 26, 400)
    x = (300.0 + rng.normal(size=(26, 16))[y] * 2.0 + 0.1 * rng.normal(size=(400, 16))).astype(jnp.bfloat16)
    _, _, mean, scale = probes.fit(jnp.asarray(x), jnp.asarray(y), steps=5)
    _, _, mean32, scale32 = probes.fit(jnp.asarray(x, jnp.float32), jnp.asarray(y), steps=5)
    assert mean.dtype == jnp.float32 and np.array_equal(mean, mean32) and np.array_equal(scale, scale32)


def test_planted_letter_is_found_after_layer_2_at_query(random_params, samples):
    linear = probes.run(PROBE, random_params, *samples["linear"][1:], n_layers=3, steps=60)
    logop = probes.run(PROBE, random_params, *samples["LogOp"][1:], n_layers=3, steps=60)
    stage = lambda r, s, p: r["test"][r["stages"].index(s), probes.POSITIONS.index(p)]  # noqa: E731
    assert linear["stages"] == ["embed", "L1 attn", "L1", "L2 attn", "L2", "L3 attn", "L3"]
    assert stage(linear, "L2", "QUERY") > 0.95 and stage(linear, "L3", "QUERY") > 0.95
    assert stage(linear, "L1", "QUERY") < 0.3 and stage(linear, "embed", "QUERY") < 0.3
    assert stage(logop, "L2", "QUERY") < 0.3


# --- Causal tests ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def query_pairs():
    logop, linear = make_pairs(jax.random.PRNGKey(7), dataclasses.replace(PROBLEM, fix_query="logop"), 16, "query")
    return query_is_answer(logop), query_is_answer(linear)


def test_planted_circuit_patching_heatmaps(planted, query_pairs):
    maps = causal.patching_maps(FORWARD, planted, *query_pairs, n_layers=3)
    heads = maps["heads"]
    assert maps["ld_clean"] > 1 and maps["ld_cf"] < -1
    assert heads[2, 0] == pytest.approx(1.0, abs=0.05)  # the reader carries the answer
    assert heads[1, 0] > 0.3  # the router's copy at QUERY moves it
    silent = np.ones_like(heads, bool)
    silent[1, 0] = silent[2, 0] = False
    np.testing.assert_allclose(heads[silent], 0.0, atol=1e-4)  # heads that write nothing
    pos = maps["positions"]
    assert pos.shape == (3, ANSWER + 1)
    assert pos[0, QUERY] == pytest.approx(1.0, abs=1e-4)  # the query token itself
    np.testing.assert_allclose(np.delete(pos[0], QUERY), 0.0, atol=0.1)
    assert causal.top_cell(heads) == ((2, 0), pytest.approx(heads[2, 0]))


def test_planted_circuit_head_ablation(planted, batches):
    b = query_is_answer(batches["linear"])
    out = causal.head_ablation(FORWARD, planted, b, 3, reference=common.concat(b, query_is_answer(batches["LogOp"])))
    assert out["clean_accuracy"] == 1.0 and out["clean_margin"] > 1
    assert out["accuracy"][2, 0] < 0.3
    for layer, head in ((0, 0), (0, 1), (1, 1), (2, 1)):  # heads that write nothing
        assert out["accuracy"][layer, head] == 1.0
        assert out["margin"][layer, head] == pytest.approx(out["clean_margin"], rel=1e-4)


def test_planted_circuit_routing_patch(planted, query_pairs):
    out = causal.route_patch_both(FORWARD, planted, *query_pairs, route=1, read=2)
    for d in causal.DIRECTIONS:
        r = out[d]
        assert r["accuracy_before"] == 1.0 and r["donor_before"] == 0.0
        assert r["donor_after"] > 0.9 and r["effect"] > 0.5  # the copied letter at QUERY decides the answer
        assert r["attention_before"][0] > 0.99 and r["attention_after"][0] > 0.99


def test_routing_patch_from_itself_changes_nothing(random_params, query_pairs):
    forward = common.forward_for(gpt.GPTConfig(n_layers=3, n_heads=2, d_model=32, d_mlp=32, max_len=fmt.seq_len(DEPTH)))
    logop, _ = query_pairs
    r = causal.route_patch(forward, random_params, logop, logop, route=1, read=2)
    np.testing.assert_allclose(r["attention_after"], r["attention_before"], atol=1e-6)
    assert r["ld_after"] == pytest.approx(r["ld_before"], abs=1e-5) and r["effect"] is None


def test_first_token_metric():
    logits = jnp.zeros((2, 3, 5)).at[0, -1, 1].set(2.0).at[0, -1, 3].set(0.5).at[1, -1, 4].set(1.0)
    margin, acc = causal.FirstToken(jnp.array([1, 2]))(logits)
    assert float(acc) == 0.5 and float(margin) == pytest.approx((1.5 - 1.0) / 2)


# --- Fact lookup -------------------------------------------------------------------------------------
def _restating(tokens):
    """[(row, answer position, position of its fact's truth value)], by a plain scan of each proof."""
    c = fmt.context_len(DEPTH)
    facts = fmt.facts_pos(DEPTH)
    out = []
    for b, row in enumerate(np.asarray(tokens)):
        value_of = {int(row[facts + 1 + 3 * k]): facts + 2 + 3 * k for k in range(3)}
        for p in range(c, len(row) - 1):
            if int(row[p]) in value_of and row[p + 1] in (fmt.TRUE, fmt.FALSE):
                out.append((b, p, value_of[int(row[p])]))
    return out


def test_planted_fact_lookup_circuit(random_params, batches):
    """blocks.0 head 1 attends to the previous token; blocks.2 head 0 from a restated letter onto its truth value."""
    tokens = jnp.concatenate([b.tokens for b in batches.values()])
    n, length = tokens.shape
    prev = np.zeros((n, 2, length, length), np.float32)
    prev[:, :, np.arange(1, length), np.arange(length - 1)] = 1.0
    prev[:, :, 0, 0] = 1.0
    onto_value = np.zeros_like(prev)
    mask = np.zeros(prev.shape, bool)
    reads = _restating(tokens)
    for b, p, v in reads:
        onto_value[b, 0, p, v] = 1.0
        mask[b, 0, p] = True
    head1 = (np.arange(2) == 1)[None, :, None, None]
    planted = {"blocks.0.attn.hook_pattern": Patch(value=prev, mask=np.broadcast_to(head1, prev.shape)),
               "blocks.2.attn.hook_pattern": Patch(value=onto_value, mask=mask)}
    forward = with_plant(lambda _: planted)
    r = lookup.measure(forward, random_params, tokens, fmt.context_len(DEPTH), 3)
    assert r["reads"] == len(reads) >= n  # every proof restates at least one fact
    assert r["prev_head"] == (0, 1) and r["prev_head_attention"] == pytest.approx(1.0, abs=1e-6)
    assert r["lookup_head"] == (2, 0) and r["lookup_head_attention"] == pytest.approx(1.0, abs=1e-6)
    assert r["prev_token"].shape == r["lookup"].shape == (3, 2)
    assert r["prev_token"][1:].max() < 0.5 and r["lookup"][:2].max() < 0.5  # unplanted heads: diffuse


def test_fact_lookup_copy_counts_right_truth_values(random_params, batches):
    """Logits naming the next token on even rows and the other truth value on odd rows."""
    tokens = jnp.concatenate([b.tokens for b in batches.values()])
    base = common.forward_for(gpt.GPTConfig(n_layers=3, n_heads=2, d_model=32, d_mlp=32, max_len=fmt.seq_len(DEPTH)))

    def forward(params, toks, patches=None, cache=()):
        _, c = base(params, toks, patches, cache)
        following = jnp.concatenate([toks[:, 1:], jnp.full_like(toks[:, :1], fmt.PAD)], axis=1)
        flipped = jnp.where(following == fmt.TRUE, fmt.FALSE, jnp.where(following == fmt.FALSE, fmt.TRUE, following))
        odd = (jnp.arange(toks.shape[0]) % 2 == 1)[:, None]
        return jax.nn.one_hot(jnp.where(odd, flipped, following), fmt.VOCAB_SIZE), c

    r = lookup.measure(forward, random_params, tokens, fmt.context_len(DEPTH), 3)
    reads = _restating(tokens)
    assert r["copy"] == pytest.approx(sum(b % 2 == 0 for b, _, _ in reads) / len(reads))
    with pytest.raises(common.AnalysisError, match="no answer restates a fact"):
        lookup.measure(forward, random_params, common.context(batches["linear"]), fmt.context_len(DEPTH), 3)


# --- Figures and settings ----------------------------------------------------------------------------
def test_draw_attention_writes_a_png(planted, batches, tmp_path):
    tokens = common.context(batches["linear"])[:1]
    pattern = attention.patterns(FORWARD, planted, tokens, 3)[0]
    assert pattern.shape == (3, 2, ANSWER + 1, ANSWER + 1)
    path = figures.draw_attention(pattern, np.asarray(tokens[0]), str(tmp_path / "a.png"), "planted")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(common.AnalysisError, match="tokens for a pattern"):
        figures.draw_attention(pattern, np.asarray(tokens[0])[:-1], str(tmp_path / "b.png"))
    with pytest.raises(common.AnalysisError, match=r"\[layers, heads, q, k\]"):
        figures.draw_attention(pattern[0], np.asarray(tokens[0]), str(tmp_path / "c.png"))


@pytest.fixture
def drawn(monkeypatch):
    """The Figures the draw_* functions make, laid out and kept instead of only written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    kept = []

    def keep(fig, path):
        fig.set_dpi(figures.DPI)  # as written: text extents do not scale exactly with the DPI
        FigureCanvasAgg(fig).draw()
        kept.append(fig)
        return path

    monkeypatch.setattr(figures, "_save", keep)
    return kept


def test_a_row_of_seed_heatmaps_shares_the_scale_of_its_colour_bar(drawn, tmp_path):
    figures.draw_layer_head({"q": [[[0.5, 3.0], [0.0, -0.5]], [[0.5, 0.2], [0.0, -0.5]]], "k": [[[0.1, 0.2], [0.0, 0.0]], [[0.3, 0.0], [0.0, 0.0]]]},
                            str(tmp_path / "h.png"), ["seed 0", "seed 1"], "title")
    panels = [ax for ax in drawn[0].axes if ax.images]
    assert [(im.norm.vmin, im.norm.vmax) for ax in panels for im in ax.images] == [(-3.0, 3.0)] * 2 + [(-1.0, 1.0)] * 2


def test_a_narrow_figure_wraps_its_title_inside_the_figure(drawn, tmp_path):
    title = "activation patching of hook_z per (layer, head): normalised effect on the first-token LD"
    figures.draw_layer_head({"q": [np.zeros((3, 3))]}, str(tmp_path / "h.png"), ["seed 0"], title)  # 3 heads, one seed: the paper's size
    fig = drawn[0]
    extent = fig._suptitle.get_window_extent(fig.canvas.get_renderer())
    assert extent.x0 >= 0 and extent.x1 <= fig.bbox.x1, (extent, fig.bbox)


def test_the_sweep_claims_figure_draws_every_bound(drawn, tmp_path):
    checks = {"exact": (">=", 1.0), "claim3": (">", 0.9), "label": ("=", "L3")}
    figures.draw_sweep_claims({k: [[0.5, 0.7], [0.9, 1.0]] for k in checks}, checks, ["a", "b"], str(tmp_path / "c.png"))
    lines = {ax.get_title(): [tuple(line.get_ydata()) for line in ax.lines] for ax in drawn[0].axes if ax.get_visible()}
    assert lines == {"exact": [(1.0, 1.0)], "claim3": [(0.9, 0.9)], "label": []}


def test_the_most_harmful_head_breaks_ties_of_accuracy_by_the_margin():
    ablation = dict(accuracy=np.array([[1.0, 1.0], [1.0, 1.0]]), margin=np.array([[2.0, 1.5], [0.3, 0.9]]))
    assert causal.most_harmful_head(ablation) == (1, 0)
    ablation["accuracy"] = np.array([[1.0, 0.6], [1.0, 1.0]])
    assert causal.most_harmful_head(ablation) == (0, 1)


def test_the_mean_over_seeds_counts_only_the_seeds_whose_effects_are_defined():
    maps = [np.array([[0.2, 0.4]]), np.full((1, 2), np.nan), np.array([[0.4, 0.0]])]
    mean, defined = pipeline.mean_of_defined(maps)
    np.testing.assert_allclose(mean, [[0.3, 0.2]])
    assert defined == 2
    mean, defined = pipeline.mean_of_defined(maps[1:2])
    assert defined == 0 and np.isnan(mean).all()


def test_settings_errors_name_the_field():
    with pytest.raises(common.AnalysisError, match="n_probe_train"):
        common.Settings(n_probe_train=0)
    with pytest.raises(common.AnalysisError, match=r"'n_patch'=20: .* at most n_attention=6"):
        common.Settings(n_attention=6, n_patch=20)
    with pytest.raises(common.AnalysisError, match="read_layer"):
        common.Settings(read_layer=3).layers(3)
    assert common.Settings().layers(3) == (1, 2)
    assert common.layer_name(1) == "layer 2 (blocks.1)"
    assert common.stats([0.5, None, 1.0]) == dict(mean=0.75, std=0.25, min=0.5, max=1.0)


def test_analysis_problems_keep_what_the_run_fixed():
    # A model trained on OR only is analysed on OR only, also when the analysis fixes the query.
    batch = common.problems(jax.random.PRNGKey(1), ProblemConfig(depth=2, fix_op="or"), 256, query="logop")
    assert batch.latent.query_logop.all() and not batch.latent.is_and.any()
    both = common.problems(jax.random.PRNGKey(1), ProblemConfig(depth=2), 256, query="logop")
    assert 0.3 < both.latent.is_and.mean() < 0.7
    assert common.unseen(ProblemConfig(depth=2)) == []
    assert common.unseen(ProblemConfig(depth=2, p_true=1.0)) == ["the run saw only TRUE facts: fact-flip pairs are off its training distribution"]


@pytest.mark.parametrize("p_logop, unseen_query", [(1.0, "linear"), (0.0, "logop")])
def test_a_run_that_never_saw_a_query_type_is_analysed_off_its_distribution(p_logop, unseen_query):
    # The trainer accepts p_logop 0 or 1; the analysis still needs both query types, and says so.
    cfg = ProblemConfig(depth=2, p_logop=p_logop, p_and=0.0)
    batch = common.problems(jax.random.PRNGKey(2), cfg, 64, query=unseen_query, op="and")
    assert (batch.latent.query_logop == (unseen_query == "logop")).all() and batch.latent.is_and.all()
    data = pipeline.make_problems(cfg, common.Settings(n_accuracy=8, n_attention=8, n_routing=8, n_probe_train=8, n_probe_test=8, n_patch=4))
    assert not data.attention["linear"].latent.query_logop.any() and data.attention["LogOp"].latent.query_logop.all()
    notes = common.unseen(cfg)
    assert len(notes) == 2 and ("LogOp queries only" if p_logop == 1.0 else "linear queries only") in notes[0] and "OR only" in notes[1]
    meta = dict(workdir="w", step=1, seeds=[0], model=dict(n_layers=3, n_heads=3, d_model=8, d_mlp=8), problem=cfg.to_dict(),
                settings={}, layers=dict(route=1, read=2), off_distribution=notes)
    assert f"**Off the training distribution:** {notes[0]}." in report.markdown(meta, [], {})


@pytest.mark.parametrize("depth", [DEPTH, 5])
@pytest.mark.parametrize("logop_first", [True, False])
def test_position_roles_name_what_each_position_holds(logop_first, depth):
    batch = common.problems(jax.random.PRNGKey(2), ProblemConfig(depth=depth, fix_logop_chain_first=logop_first), 64)
    context = np.asarray(common.context(batch))
    roles = common.position_roles(depth, logop_first)
    assert len(roles) == context.shape[1]
    # The independent truth: the sampled latent letters (a_0..a_{d-1}, b_0.., c_0..), the operator,
    # the operand order, the fact order and truth values, the query, and the metadata's positions.
    lat = batch.latent
    letters = np.asarray(lat.letters)
    d = depth
    chain = {"a": 0, "b": d, "c": 2 * d}
    first_letter, second_letter = letters[:, d - 2], letters[:, 2 * d - 2]  # a_{d-2}, b_{d-2}: the LogOp rule's operands
    swapped = np.asarray(lat.operands_swapped)
    truth = np.asarray(lat.truth)  # first operand's source, second operand's source, linear source
    # a_0 holds the first operand's truth unless the rule reads b OP a.
    truth_of_source = np.stack([np.where(swapped, truth[:, 1], truth[:, 0]), np.where(swapped, truth[:, 0], truth[:, 1]), truth[:, 2]], -1)
    fact_order = np.asarray(lat.fact_order)  # source (0 a_0, 1 b_0, 2 c_0) of each written fact
    expected = {
        "->": fmt.IMPLIES, ".": fmt.DOT, "FACTS": fmt.FACTS, "END_F": fmt.END_FACTS, "Q:": fmt.QUESTION,
        "END_Q": fmt.END_QUESTION, "ANS": fmt.ANSWER,
        "OP": np.where(lat.is_and, fmt.AND, fmt.OR),
        "x": np.where(swapped, second_letter, first_letter),
        "y": np.where(swapped, first_letter, second_letter),
        "QUERY": np.where(lat.query_logop, letters[:, d - 1], letters[:, 3 * d - 1]),
    }
    for name, base in chain.items():
        for i in range(d):
            expected[f"{name}{i}"] = letters[:, base + i]
    for k in range(1, 4):
        source = fact_order[:, k - 1]
        expected[f"fact{k}"] = letters[np.arange(len(source)), np.array([0, d, 2 * d])[source]]
    seen = set()
    for i, role in enumerate(roles):
        if role == "T/F":
            # The value written after fact k: TRUE/FALSE, and the truth of that fact's source.
            assert np.isin(context[:, i], (fmt.TRUE, fmt.FALSE)).all(), f"position {i} (T/F) holds {fmt.TOKEN_NAMES[int(context[0, i])]}"
            assert roles[i - 1] in ("fact1", "fact2", "fact3"), f"position {i}: T/F follows {roles[i - 1]!r}, not a fact's letter"
            source = fact_order[:, int(roles[i - 1][4:]) - 1]
            want = np.where(truth_of_source[np.arange(len(source)), source], fmt.TRUE, fmt.FALSE)
        else:
            assert role in expected, f"position {i}: unknown role {role!r}"
            want = expected[role]
        seen.add(role)
        np.testing.assert_array_equal(context[:, i], np.broadcast_to(want, context[:, i].shape), err_msg=f"position {i} role {role}")
    # Every letter role of the chains, both operands, the three facts and the query are placed.
    letter_roles = {f"{c}{i}" for c in "abc" for i in range(d)} - {f"b{d - 1}"}  # b_{d-1} is never written
    assert letter_roles | {"x", "y", "OP", "QUERY", "T/F", "fact1", "fact2", "fact3"} <= seen
    # The roles agree with the batch's positions: rule_pos (canonical order) and fact_pos.
    rule_pos, fact_pos = np.asarray(batch.rule_pos), np.asarray(batch.fact_pos)
    at = lambda pos: np.asarray(roles)[pos]  # noqa: E731
    for i in range(d - 2):
        assert (at(rule_pos[:, 2 * i]) == f"a{i}").all() and (at(rule_pos[:, 2 * i] + 2) == f"a{i + 1}").all()
        assert (at(rule_pos[:, 2 * i + 1]) == f"b{i}").all() and (at(rule_pos[:, 2 * i + 1] + 2) == f"b{i + 1}").all()
    logop = rule_pos[:, 2 * (d - 2)]
    assert (at(logop) == "x").all() and (at(logop + 1) == "OP").all() and (at(logop + 2) == "y").all()
    assert (at(logop + 4) == f"a{d - 1}").all()
    for i in range(d - 1):
        assert (at(rule_pos[:, 2 * (d - 2) + 1 + i]) == f"c{i}").all() and (at(rule_pos[:, 2 * (d - 2) + 1 + i] + 2) == f"c{i + 1}").all()
    for j in range(3):
        fact_roles = at(fact_pos[:, j])
        assert np.char.startswith(fact_roles.astype(str), "fact").all() and (at(fact_pos[:, j] + 1) == "T/F").all()
        assert (np.asarray([fact_order[b, int(r[4:]) - 1] for b, r in enumerate(fact_roles)]) == j).all()
    assert roles.index("QUERY") == fmt.query_pos(d) == int(batch.query_pos[0])


def test_claim1_is_met_at_100_percent_only_and_a_miss_never_prints_as_100():
    row = report.Row("exact match, all problems", "100%", [1.0, 2047 / 2048, 4095 / 4096], check=(">=", 1.0))
    assert row.met() == 1
    table = report.markdown_table(report.Table("t", "title", "claim", "method", [row]), [0, 1, 2])
    assert "| exact match, all problems | 100% | 100.0% | 99.95% | 99.98% |" in table and "| 1/3 |" in table
    assert [report.percent(v) for v in (0.5, 0.9994, 0.99999, 1.0)] == ["50.0%", "99.9%", "99.999%", "100.0%"]


def test_a_label_check_counts_the_seeds_that_meet_it():
    row = report.Row("both bounds on that head", "yes", ["yes", "no", None], "label", check=("=", "yes"))
    assert row.met() == 1 and row.to_dict()["check"]["met"] == 1
    table = report.markdown_table(report.Table("t", "title", "claim", "method", [row]), [0, 1, 2])
    assert "| both bounds on that head | yes | yes | no | n/a |  |  | 1/3 |" in table
