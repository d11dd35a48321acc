"""Tables per claim (the paper's number, ours per seed, mean and spread), report.md and summary.json."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from logic_jax.analysis import attention, causal, common, probes
from logic_jax.problem import format as fmt
from logic_jax.train.state import Member, differing_optim, spans_points


@dataclasses.dataclass
class Row:
    name: str
    paper: str  # the paper's number or statement ("—" when it has none)
    values: list  # one per seed: float, or str for labels (head names)
    kind: str = "pct"  # "pct" | "num" | "label"
    check: tuple[str, Any] | None = None  # (">", ">=" or "<", threshold), or ("=", label): the paper's bound, per seed
    key: str | None = None  # a headline row's stable id: the sweep report compares these across grid points

    def to_dict(self) -> dict:
        d = dict(name=self.name, paper=self.paper, kind=self.kind, values=common.to_json(self.values))
        if self.key is not None:
            d["key"] = self.key
        if self.kind != "label":
            d.update(common.stats(self.values))
        if self.check is not None:
            d["check"] = dict(op=self.check[0], threshold=self.check[1], met=self.met(), of=len(self.values))
        return d

    def met(self) -> int | None:
        if self.check is None:
            return None
        op, t = self.check
        if op == "=":
            return sum(v == t for v in self.values)
        compare = {">": np.greater, ">=": np.greater_equal, "<": np.less}[op]
        ok = [v is not None and np.isfinite(v) and bool(compare(v, t)) for v in self.values]
        return int(sum(ok))


@dataclasses.dataclass
class Table:
    id: str
    title: str
    claim: str  # the paper's claim, in words
    method: str  # how we measure it
    rows: list[Row]
    figures: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dict(id=self.id, title=self.title, claim=self.claim, method=self.method, rows=[r.to_dict() for r in self.rows], figures=list(self.figures))


def _col(results: list[dict], get: Callable[[dict], Any]) -> list:
    out = []
    for r in results:
        try:
            v = get(r)
        except (KeyError, TypeError, IndexError):
            v = None
        out.append(None if v is None else (v if isinstance(v, str) else float(v)))
    return out


def _head(layer_head) -> str:
    return "-" if layer_head is None else f"L{layer_head[0] + 1} h{layer_head[1]}"


def tables(results: list[dict], seeds: Sequence[int], meta: dict) -> list[Table]:
    route, read = meta["layers"]["route"], meta["layers"]["read"]
    L2, L3 = common.layer_name(route), common.layer_name(read)
    col = lambda get: _col(results, get)  # noqa: E731
    out = []

    # Claim 1 ---------------------------------------------------------------------------------
    rows = [
        Row("exact match, all problems", "100%", col(lambda r: r["accuracy"]["exact"]), check=(">=", 1.0), key="exact"),
        Row("exact match, linear queries", "100%", col(lambda r: r["accuracy"]["per_query"]["linear"])),
        Row("exact match, LogOp queries", "100%", col(lambda r: r["accuracy"]["per_query"]["LogOp"])),
    ]
    rows += [Row(f"exact match, case {c}", "100%", col(lambda r, c=c: r["accuracy"]["per_case"][c])) for c in fmt.CASE_NAMES]
    rows.append(Row("first answer token correct", "—", col(lambda r: r["accuracy"]["first_token"]), key="first_token"))
    out.append(Table(
        "claim1", "Claim 1: accuracy", "100% exact match of the whole greedy-decoded proof on held-out problems.",
        f"Greedy decoding of {meta['settings']['n_accuracy']} fresh problems of the training distribution (the trainer's "
        "`train.evaluate`); exact match of the whole answer through EOS, per case (query chain, operator, the operands' source facts).",
        rows,
    ))

    # Claim 2 ---------------------------------------------------------------------------------
    rows = [
        Row("chain separation (within − between cosine)", "two clusters", col(lambda r: r["routing"]["chain_separation"]), "num", key="chain_separation"),
        Row("chain silhouette (cosine distance)", "two clusters", col(lambda r: r["routing"]["chain_silhouette"]), "num", key="chain_silhouette"),
        Row("mean within-chain-group cosine", "—", col(lambda r: r["routing"]["chain_within"]), "num"),
        Row("mean between-chain-group cosine", "—", col(lambda r: r["routing"]["chain_between"]), "num"),
        Row("OR/AND separation, LogOp queries", "weaker sub-structure", col(lambda r: r["routing"]["op_separation"]), "num"),
        Row("OR/AND silhouette, LogOp queries", "weaker sub-structure", col(lambda r: r["routing"]["op_silhouette"]), "num"),
    ]
    out.append(Table(
        "claim2", "Claim 2: the routing signal", f"At QUERY, the {L2} attention output clusters by queried chain (LogOp vs linear), with a weaker OR/AND sub-structure.",
        f"`blocks.{route}.hook_attn_out` at QUERY on {meta['settings']['n_routing']} problems, half of each query type. "
        "Separation = mean within-group cosine (each group's mean over its pairs i≠j, groups weighted equally) minus the mean "
        "cosine over pairs from different groups (0 none, up to 2). Silhouette: mean of (b−a)/max(a,b) with cosine distance 1−cos, "
        "a the mean distance to the own group, b to the other (−1..1). OR/AND: the same within LogOp-queried problems.",
        rows, ("routing_cosine",),
    ))

    # Claim 3 ---------------------------------------------------------------------------------
    c3 = lambda key: col(lambda r: r["attention"]["claim3"][key])  # noqa: E731
    rows = [
        Row(f"reading head of {L3}", "—", [f"h{int(v)}" for v in c3("head")], "label"),
        Row("linear queries: reading head's attention ANSWER→QUERY", "> 90%", c3("linear_head"), check=(">", 0.9), key="claim3_linear"),
        Row("LogOp queries: the same head's attention ANSWER→QUERY", "< 5%", c3("logop_head"), key="claim3_logop"),
        # The claim is the contrast on one head: a head that never reads QUERY is not "< 5%" met.
        Row("both bounds on that head", "yes", [None if None in (lin, lo) else "yes" if lin > 0.9 and lo < 0.05 else "no"
                                               for lin, lo in zip(c3("linear_head"), c3("logop_head"))], "label", check=("=", "yes"), key="claim3_both"),
        Row("linear queries: mean over heads", "—", c3("linear_mean")),
        Row("LogOp queries: mean over heads", "—", c3("logop_mean")),
    ]
    out.append(Table(
        "claim3", "Claim 3: layer 3 reads the route", f"{L3} attention from ANSWER puts > 90% on QUERY for linear queries and < 5% for LogOp queries.",
        f"`blocks.{read}.attn.hook_pattern` at q = ANSWER, k = QUERY, averaged over {meta['settings']['n_attention']} problems per query type. "
        "The reading head is the head with the most attention on QUERY for linear queries; the LogOp number is that same head's. "
        "Per-head values are in summary.json.",
        rows, ("reading_regions", "answer_attention_linear", "answer_attention_LogOp", "attention_linear", "attention_LogOp"),
    ))

    # Claim 4 ---------------------------------------------------------------------------------
    def probe(q, stage, pos):
        def get(r):
            p = r["probes"][q]
            return p["test"][p["stages"].index(stage), probes.POSITIONS.index(pos)]
        return col(get)

    after, before = probes.stage_after(route), probes.stage_after(route - 1) if route > 0 else "embed"
    last = probes.stage_after(meta["model"]["n_layers"] - 1)
    rows = [
        Row(f"linear probe at QUERY after {L2}", "> 97%", probe("linear", after, "QUERY"), check=(">", 0.97), key="linear_probe"),
        Row(f"linear probe at QUERY before it ({before})", "—", probe("linear", before, "QUERY")),
        Row(f"linear probe at ANSWER after the last layer ({last})", "—", probe("linear", last, "ANSWER")),
        Row(f"LogOp probe at QUERY after {L2}", "—", probe("LogOp", after, "QUERY")),
        Row(f"LogOp probe at ANSWER after the last layer ({last})", "—", probe("LogOp", last, "ANSWER")),
    ]
    out.append(Table(
        "claim4", "Claim 4: the linear answer is computed by layer 2",
        f"An affine probe on the residual stream after {L2} at QUERY predicts the linear chain's first answer token with > 97% accuracy.",
        f"Multinomial logistic regression over the 26 letters on standardised features, L2 penalty {meta['settings']['probe_l2']} x the sum "
        "of squared weights on the mean cross-entropy (`--probe_l2=0`: unpenalised), "
        f"{meta['settings']['probe_steps']} full-batch Adam steps; trained on {meta['settings']['n_probe_train']} and tested on "
        f"{meta['settings']['n_probe_test']} problems of one query type. Stages: `embed` = blocks.0.hook_resid_pre, `Lk attn` = "
        "blocks.{k-1}.hook_resid_mid, `Lk` = blocks.{k-1}.hook_resid_post. Every stage x position is in summary.json and the figure. Chance: 1/26 = 3.8%.",
        rows, ("probes",),
    ))

    # Claim 5 ---------------------------------------------------------------------------------
    c5 = lambda key: col(lambda r: r["attention"]["claim5"][key])  # noqa: E731
    patch_top = lambda kind: [causal.top_cell(r["patching"][kind]["heads"]) for r in results]  # noqa: E731
    rows = [
        Row("head reading the first-token fact", "—", [f"h{int(v)}" for v in c5("fact_head")], "label"),
        Row("its attention on the first-token fact (letter + value)", "—", c5("first_fact")),
        Row("its attention on the other branch source's fact", "—", c5("other_branch_fact")),
        Row("its attention on the linear chain's fact (a distractor here)", "—", c5("linear_fact")),
        Row("head reading the operator", "—", [f"h{int(v)}" for v in c5("operator_head")], "label"),
        Row("its attention on the operator token", "—", c5("operator")),
        Row("largest attention on the two branch sources' facts, one head", "—", c5("branch_facts")),
        Row("fact-flip pairs: top (layer, head) by patching effect", "—", [_head(c) for c, _ in patch_top("fact")], "label"),
        Row("its normalised effect", "—", [e for _, e in patch_top("fact")], "num"),
        Row("operator-flip pairs: top (layer, head)", "—", [_head(c) for c, _ in patch_top("operator")], "label"),
        Row("its normalised effect", "—", [e for _, e in patch_top("operator")], "num"),
    ]
    out.append(Table(
        "claim5", "Claim 5: for LogOp queries, layer 3 reads the facts and the operator",
        "For LogOp queries the last layer retrieves the facts of the two branch sources and the operator, and picks the deciding branch (no public numbers).",
        f"Attention of {L3} from ANSWER on LogOp-queried problems, summed over regions: the first-token fact (letter and truth value "
        "of the source the answer starts from), the other branch source's fact, the linear chain's fact, the operator token. Patching: LogOp-queried pairs that differ "
        "in one source fact or in the operator and whose first tokens differ; `hook_z` of one (layer, head) at every position from the "
        "counterfactual; effect = (LD_patched − LD_clean) / (LD_cf − LD_clean), LD = logit(clean first token) − logit(cf first token).",
        rows, ("reading_regions", "patching_heads", "patching_positions"),
    ))

    # Fact lookup -------------------------------------------------------------------------------
    lk = lambda key: col(lambda r: r["lookup"][key])  # noqa: E731
    rows = [
        Row("truth value copied after a fact's letter (teacher-forced)", "—", lk("copy"), key="lookup_copy"),
        Row("previous-token head at the facts' truth values", "—", [_head(r["lookup"]["prev_head"]) for r in results], "label"),
        Row("its attention from a truth value onto its letter", "—", lk("prev_head_attention"), key="prev_token_head"),
        Row("lookup head: answer's letter onto its fact's truth value", "—", [_head(r["lookup"]["lookup_head"]) for r in results], "label"),
        Row("its attention on that truth value", "—", lk("lookup_head_attention")),
    ]
    out.append(Table(
        "lookup", "Fact lookup (not in the paper): reading a truth value from the facts",
        "Not measured in the paper. Restating a source fact in the proof, and choosing the LogOp branch, need the truth value of a "
        "given letter from facts written in random order: an induction circuit (a previous-token head, then a lookup head).",
        f"The {meta['settings']['n_accuracy']} held-out problems of claim 1 with their proofs teacher-forced. At every answer position "
        "holding a fact's letter followed by its truth value: whether the greedy next token is that value, and the attention of each "
        "(layer, head) onto that letter's truth value in the Facts section; at each fact's truth value, the attention onto the letter "
        "before it. The strongest head of each kind is shown; every head is in the figure and summary.json. A seed may look the value "
        "up before it writes the letter (from ANSWER, with the branch choice), so a weak lookup head does not by itself mean no lookup; "
        "the copy rate and the previous-token head are the robust signs of the circuit.",
        rows, ("lookup_heads",),
    ))

    # Causal tests ------------------------------------------------------------------------------
    rows = []
    for d in causal.DIRECTIONS:
        rp = lambda key, d=d: col(lambda r: r["route_patch"][d][key])  # noqa: E731
        head_att = lambda key, d=d: col(lambda r: r["route_patch"][d][key][r["attention"]["claim3"]["head"]])  # noqa: E731
        rows += [
            Row(f"{d}: reading head's attention to QUERY, recipient", "—", head_att("attention_before")),
            Row(f"{d}: the same, routing signal patched", "—", head_att("attention_after")),
            Row(f"{d}: recipient's first token correct, unpatched", "—", rp("accuracy_before")),
            Row(f"{d}: first token = donor's, unpatched", "—", rp("donor_before")),
            Row(f"{d}: first token = donor's, patched (flip rate)", "—", rp("donor_after")),
            Row(f"{d}: normalised LD effect", "—", rp("effect"), "num", key=f"route_patch_{d.replace('->', '_to_')}"),
        ]
    for q in ("linear", "LogOp"):
        ab = [r["ablation"][q] for r in results]
        worst = [causal.most_harmful_head(a) for a in ab]
        rows += [
            Row(f"{q} queries: first-token accuracy, no ablation", "—", [a["clean_accuracy"] for a in ab]),
            Row(f"{q} queries: most harmful head (mean ablation)", "—", [_head(w) for w in worst], "label"),
            Row(f"{q} queries: first-token accuracy with it ablated", "—", [float(a["accuracy"][w]) for a, w in zip(ab, worst)]),
        ]
    top = [causal.top_cell(r["patching"]["query"]["heads"]) for r in results]
    rows += [
        Row("query-switch pairs: top (layer, head) by patching effect", "—", [_head(c) for c, _ in top], "label"),
        Row("its normalised effect", "—", [e for _, e in top], "num"),
    ]
    out.append(Table(
        "causal", "Causal tests (not in the paper)",
        "Activation patching of the routing signal at QUERY and per-head ablations (the paper shows attention only).",
        f"Routing patch: {meta['settings']['n_patch']} LogOp-queried problems and the same problems linear-queried (query-switch pairs); "
        f"`blocks.{route}.hook_attn_out` at QUERY taken from the donor (the other query) into the recipient; measured in the recipient: "
        f"the reading head's ({L3}) attention from ANSWER to QUERY, whether the first token becomes the donor's, and the normalised effect on "
        "LD = logit(recipient's first token) − logit(donor's) (0 none, 1 full flip). Ablation: one head's `hook_z` replaced by its mean "
        f"(per position) over {meta['settings']['n_patch']} problems of each query type. Heatmaps of every cell: figures and summary.json.",
        rows, ("route_patch", "ablation_heads", "patching_heads", "patching_positions"),
    ))
    return out


# --- Output -------------------------------------------------------------------------------------
def _fmt(v, kind: str) -> str:
    if v is None:
        return "n/a"
    if kind == "label" or isinstance(v, str):
        return str(v)
    if kind == "pct":
        return percent(v)
    return f"{v:.3f}"


def percent(v: float) -> str:
    """``v`` as a percentage with one decimal, or more where one would round a miss up to 100.0%."""
    for decimals in range(1, 5):
        text = f"{100 * v:.{decimals}f}"
        if v >= 1 or float(text) < 100:
            return text + "%"
    return f"{100 * v:.4f}%"


def _spread(d: dict, kind: str) -> tuple[str, str]:
    if kind == "label" or d.get("mean") is None:
        return "", ""
    if kind == "pct":
        return f"{percent(d['mean'])} ± {100 * d['std']:.1f}", f"{percent(d['min'])}–{percent(d['max'])}"
    return f"{d['mean']:.3f} ± {d['std']:.3f}", f"{d['min']:.3f}–{d['max']:.3f}"


def markdown_table(table: Table, seeds: Sequence[int]) -> str:
    head = ["quantity", "paper"] + [f"seed {s}" for s in seeds] + ["mean ± std", "min–max", "paper met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.rows:
        d = row.to_dict()
        mean, spread = _spread(d, row.kind)
        met = f"{d['check']['met']}/{d['check']['of']}" if "check" in d else ""
        cells = [row.name, row.paper] + [_fmt(v, row.kind) for v in row.values] + [mean, spread, met]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def members_note(seeds: Sequence[int], members: Sequence[dict]) -> str | None:
    """For a sweep group (several grid points trained in one vmap): what each 'seed k' column is."""
    if not spans_points([Member.from_dict(m) for m in members]):
        return None
    differing = differing_optim(members)
    by_seed = len({m["seed"] for m in members}) > 1

    def label(k: int, m: dict) -> str:
        what = [f"optim.{key}={m['optim'][key]:g}" for key in differing] + ([f"config seed {m['seed']}"] if by_seed else [])
        return f"seed {k} = point {m['point']} seed {m['index']}" + (f" ({', '.join(what)})" if what else "")

    return ("**A sweep group:** its grid points trained together, and each column 'seed k' (and each figure's) is the group's "
            "member k: " + "; ".join(label(k, m) for k, m in zip(seeds, members)) + ".")


def markdown(meta: dict, tables: list[Table], files: dict[str, str]) -> str:
    m, p = meta["model"], meta["problem"]
    route, read = meta["layers"]["route"], meta["layers"]["read"]
    lines = [
        "# The small model's circuits, measured on every seed",
        "",
        f"Checkpoint `{meta['workdir']}` at step {meta['step']}; seeds {meta['seeds']}. Model: {m['n_layers']} layers, {m['n_heads']} heads, "
        f"d_model {m['d_model']}, d_mlp {m['d_mlp']}. Problems: depth {p['depth']}, p_logop {p['p_logop']}, p_and {p['p_and']}.",
        "",
        f"Layers are named as in the paper, counting from 1, with the 0-indexed hook name: the routing layer is {common.layer_name(route)}, "
        f"the reading layer {common.layer_name(read)}. Percentages are over problems; 'mean ± std' and 'min–max' are over seeds; "
        "'paper met' counts the seeds within the paper's bound. Every number is also in `summary.json`.",
        "",
    ]
    group = members_note(meta["seeds"], meta.get("members", []))
    if group:
        lines += [group, ""]
    lines += [f"**Off the training distribution:** {note}." for note in meta.get("off_distribution", [])]
    if meta.get("off_distribution"):
        lines.append("")
    for t in tables:
        lines += [f"## {t.title}", "", f"**Paper.** {t.claim}", "", f"**Measured.** {t.method}", "", markdown_table(t, meta["seeds"]), ""]
        shown = [f for f in t.figures if f in files]
        if shown:
            lines += ["", " ".join(f"![{f}]({files[f]})" for f in shown[:2]), ""]
            if len(shown) > 2:
                lines += ["More figures: " + ", ".join(f"[{f}]({files[f]})" for f in shown[2:]), ""]
    s = meta["settings"]
    lines += [
        "## Settings",
        "",
        "```",
        "\n".join(f"{k} = {v}" for k, v in s.items()),
        "```",
        "",
        f"Wall time {meta.get('wall_time_s', 0):.0f} s.",
        "",
    ]
    return "\n".join(lines)


def details(results: list[dict]) -> list[dict]:
    """Every per-seed array (per head, per stage and position, per cell) for summary.json."""
    out = []
    for r in results:
        att = r["attention"]
        out.append(dict(
            accuracy=r["accuracy"],
            routing=r["routing"],
            attention=dict(
                regions=list(attention.REGIONS),
                linear=dict(onto_query=att["linear"]["onto_query"], regions=att["linear"]["regions"]),
                LogOp=dict(onto_query=att["LogOp"]["onto_query"], regions=att["LogOp"]["regions"]),
                claim3=att["claim3"],
                claim5={k: v for k, v in att["claim5"].items() if k != "regions"},
            ),
            probes=r["probes"],
            lookup=r["lookup"],
            route_patch=r["route_patch"],
            ablation=r["ablation"],
            patching=r["patching"],
        ))
    return common.to_json(out)


def summary(meta: dict, tables: list[Table], results: list[dict], files: dict[str, str]) -> dict:
    return common.to_json(dict(meta=meta, tables=[t.to_dict() for t in tables], figures=files, per_seed=details(results)))
