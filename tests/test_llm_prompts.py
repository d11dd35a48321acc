"""The LLM prompt builder and its tokenizer checks (problem.md, "The LLM prompt"); no model needed."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from logic_jax.llm.prompts import PAIR_KINDS, PromptConfig, PromptError, build_pairs
from logic_jax.llm.tokens import SPANS, PromptCheckError, tokenize_pair, tokenize_pairs
from logic_jax.models.mistral.tokenizer import Tokenizer, sentencepiece_tokenizer, shipped_tokenizer_path
from logic_jax.problem import format as fmt
from logic_jax.problem import oracle

N = 12


@pytest.fixture(scope="module")
def v1():
    return sentencepiece_tokenizer(shipped_tokenizer_path("mistral_v1"))


@pytest.fixture(scope="module")
def pairs_by_kind():
    return {kind: build_pairs(0, N, PromptConfig(kind=kind)) for kind in PAIR_KINDS}


def test_prompt_form(pairs_by_kind):
    for pair in pairs_by_kind["query"]:
        lines = pair.clean_text.split("\n")
        assert len(lines) == 7 and lines[-1] == pair.clean.question and lines[-1].endswith("Answer:")
        examples = pair.examples
        assert [e.example for e in examples] == lines[:6]
        assert sum(oracle.structure(e.context).query_logop for e in examples) == 3  # half query the LogOp chain
        truths = set()
        for e in examples:
            s = oracle.structure(e.context)
            assert s.op == fmt.OR and s.facts[s.linear[0]] and s.facts[s.first[0]]
            truths.add(s.facts[s.second[0]])
            assert e.example == fmt.render(e.context, e.proof) and e.proof == tuple(oracle.prove(e.context))
            assert len(e.context) == fmt.context_len(2)
        assert len(truths) == 1  # one (TRUE, x) pair per prompt
        assert oracle.structure(pair.clean.context).op == fmt.OR  # question_op defaults to OR
    assert PromptConfig(shots=4).shots == 4 and build_pairs(1, 1, PromptConfig(shots=4))[0].clean_text.count("\n") == 4


def test_pairs_follow_their_kind(pairs_by_kind):
    for kind, pairs in pairs_by_kind.items():
        for pair in pairs:
            c, d = oracle.structure(pair.clean.context), oracle.structure(pair.cf.context)
            assert pair.prefix == "".join(e.example + "\n" for e in pair.examples)
            assert pair.clean_text.startswith(pair.prefix) and pair.cf_text.startswith(pair.prefix)
            assert pair.clean.proof == tuple(oracle.prove(pair.clean.context)) and pair.cf.proof == tuple(oracle.prove(pair.cf.context))
            diff = [i for i, (a, b) in enumerate(zip(pair.clean.context, pair.cf.context)) if a != b]
            if kind == "query":
                assert diff == [fmt.query_pos(2)] and c.query_logop != d.query_logop
                assert (pair.clean_target, pair.cf_target) == (pair.clean.first_letter, pair.cf.first_letter)
                assert pair.clean_target != pair.cf_target
            elif kind == "fact":
                assert c.query_logop and len(diff) == 1 and pair.clean.context[diff[0]] in (fmt.TRUE, fmt.FALSE)
                assert pair.clean.first != pair.cf.first and pair.fact_source in (0, 1, 2)
            else:
                assert pair.clean.first == pair.cf.first and c.facts == d.facts and c.query == d.query
                assert sorted(fmt.parse_context(pair.clean.context).rules, key=str) == sorted(fmt.parse_context(pair.cf.context).rules, key=str)
                other = c.linear[-1] if c.query_logop else c.conclusion
                switched = list(pair.clean.context)
                switched[fmt.query_pos(2)] = other
                assert pair.clean_target == pair.clean.first_letter and pair.cf_target == fmt.TOKEN_NAMES[oracle.prove(switched)[0]]
    # Fact pairs cover every OR case that one flip can change, and only those (TF cannot: it is
    # redrawn). Seed 0, N = 12 draws OR TT 5, OR FT 4, OR FF 3 times: all three appear.
    assert {fmt.CASE_NAMES[p.clean.case] for p in pairs_by_kind["fact"]} == {"OR TT", "OR FT", "OR FF"}
    assert set(Counter(oracle.structure(p.clean.context).query_logop for p in pairs_by_kind["query"])) == {True, False}


def test_pairs_are_a_function_of_seed_and_index():
    cfg = PromptConfig(kind="fact", shots=2)
    assert build_pairs(3, 3, cfg) == build_pairs(3, 5, cfg)[:3]
    assert build_pairs(3, 2, cfg) != build_pairs(4, 2, cfg)
    with pytest.raises(PromptError, match="pair kind"):
        PromptConfig(kind="operator")


def test_v1_tokenizer_checks_and_spans(pairs_by_kind, v1):
    for kind, pairs in pairs_by_kind.items():
        for pair, tp in zip(pairs, tokenize_pairs(v1, pairs, positions=5)):
            assert len(tp.clean_ids) == len(tp.cf_ids) and tp.clean_ids[0] == v1.bos_id
            assert tp.length - 1 - tp.query_index == 3  # ' of', QUERY, '.', ' Answer', ':'
            assert v1.decode([tp.clean_ids[tp.query_index]]) == pair.clean.query_letter
            assert v1.decode([tp.cf_ids[tp.query_index]]) == pair.cf.query_letter
            assert v1.decode([tp.clean_target]) == pair.clean_target and v1.decode([tp.cf_target]) == pair.cf_target
            assert v1.decode(list(tp.clean_proof_ids)) == pair.clean.proof_text
            text = lambda name: "".join(v1.decode(list(tp.clean_ids[: i + 1]))[len(v1.decode(list(tp.clean_ids[:i]))):] for i in tp.spans[name]).strip()  # noqa: E731
            assert text("query") == text("conclusion") == pair.clean.query_letter
            assert text("correct_fact_letter") == pair.clean.first_letter == text("correct_fact")[0]
            assert text("facts").startswith("Facts:") and text("facts").count(".") == 3
            assert text("queried_rule").endswith(f"implies {pair.clean.query_letter}.")
            assert text("rule_first_letter") == text("queried_rule")[0]
            assert set(tp.spans) == set(SPANS)


def char_tokenizer() -> Tokenizer:
    """Characters as tokens: ' T' is two tokens, so no answer letter is one token."""
    return Tokenizer(
        encode=lambda text: [1] + [ord(c) + 3 for c in text],
        decode=lambda ids: "".join(chr(i - 3) for i in ids if i >= 3),
        vocab_size=260, bos_id=1, eos_id=2, source="char-level test tokenizer",
    )


def test_bad_tokenizers_are_errors(pairs_by_kind, v1):
    pair = pairs_by_kind["query"][0]
    with pytest.raises(PromptCheckError, match=rf"pair 0 \(query\), clean prompt: answer letter '{pair.clean.first_letter}' is not one token"):
        tokenize_pair(char_tokenizer(), pair)

    lossy = dataclasses.replace(v1, decode=lambda ids: v1.decode(ids).replace("truth", "truht"), source="lossy")
    with pytest.raises(PromptCheckError, match="does not reproduce the prompt"):
        tokenize_pair(lossy, pair)

    # A tokenizer that writes one letter (the counterfactual's query letter) as two tokens,
    # '▁' and the bare letter: the two prompts then differ in length.
    import sentencepiece

    pieces = sentencepiece.SentencePieceProcessor(model_file=str(shipped_tokenizer_path("mistral_v1")))
    whole, space, bare = (pieces.piece_to_id(p) for p in ("▁" + pair.cf.query_letter, "▁", pair.cf.query_letter))

    def encode(text):
        out = []
        for i in v1.encode(text):
            out += [space, bare] if i == whole else [i]
        return out

    def decode(ids):
        ids, merged = list(ids), []
        while ids:
            if ids[:2] == [space, bare]:
                merged.append(whole)
                ids = ids[2:]
            else:
                merged.append(ids.pop(0))
        return v1.decode(merged)

    splitting = dataclasses.replace(v1, encode=encode, decode=decode, source="letter-splitting test tokenizer")
    with pytest.raises(PromptCheckError, match=r"pair 0 \(query\): the clean prompt has \d+ tokens and the counterfactual \d+"):
        tokenize_pair(splitting, pair)

    with pytest.raises(PromptCheckError, match="QUERY is 3 tokens before the last one"):
        tokenize_pairs(v1, [pair], positions=3)

