"""The Python oracle: the proof rules of problem.md, the error classes, malformed contexts."""

import pytest

from logic_jax.problem import format as fmt
from logic_jax.problem import oracle
from logic_jax.problem.format import AND, DOT, EOS, FACTS, FALSE, IMPLIES, OR, SEMI, TRUE, UNDETERMINED, ParseError

L = {chr(ord("A") + i): i for i in range(26)}


def context_d3(op=OR, facts=(("K", False), ("C", True), ("W", True)), query="S"):
    """problem.md's depth-3 example, with the operator, facts and query as arguments."""
    rules = [fmt.Rule((L["C"],), None, L["Y"]), fmt.Rule((L["K"],), None, L["Z"]), fmt.Rule((L["Y"], L["Z"]), op, L["S"]),
             fmt.Rule((L["W"],), None, L["H"]), fmt.Rule((L["H"],), None, L["G"])]
    return fmt.Context(tuple(rules), tuple((L[v], t) for v, t in facts), L[query]).tokens()


def words(text):
    """Answer ids from a compact spelling: letters, and T/F/U/I/;/./AND/OR/EOS."""
    table = {"T": TRUE, "F": FALSE, "U": UNDETERMINED, "->": IMPLIES, ";": SEMI, ".": DOT, "and": AND, "or": OR, "EOS": EOS}
    return [table[w] if w in table else L[w] for w in text.split()]


@pytest.mark.parametrize(
    "op,c,k,answer",
    [
        # OR: the TRUE branch, the first on a tie; both when neither is TRUE.
        (OR, True, True, "C T . C -> Y ; Y T . Y or Z -> S ; S T . EOS"),
        (OR, True, False, "C T . C -> Y ; Y T . Y or Z -> S ; S T . EOS"),
        (OR, False, True, "K T . K -> Z ; Z T . Y or Z -> S ; S T . EOS"),
        (OR, False, False, "C F K F . C -> Y ; Y U . K -> Z ; Z U . Y or Z -> S ; S U . EOS"),
        # AND: the FALSE branch, the first on a tie; both when both are TRUE.
        (AND, True, True, "C T K T . C -> Y ; Y T . K -> Z ; Z T . Y and Z -> S ; S T . EOS"),
        (AND, True, False, "K F . K -> Z ; Z U . Y and Z -> S ; S U . EOS"),
        (AND, False, True, "C F . C -> Y ; Y U . Y and Z -> S ; S U . EOS"),
        (AND, False, False, "C F . C -> Y ; Y U . Y and Z -> S ; S U . EOS"),
    ],
)
def test_table_of_problem_md(op, c, k, answer):
    ctx = context_d3(op, (("K", k), ("C", c), ("W", True)))
    assert oracle.prove(ctx) == words(answer)


def test_linear_query_and_lengths():
    ctx = context_d3(query="G", facts=(("K", False), ("C", True), ("W", False)))
    assert oracle.prove(ctx) == words("W F . W -> H ; H U . H -> G ; G U . EOS")
    assert len(oracle.prove(ctx)) == 18
    assert oracle.case_of(ctx) == 0


def test_example_renders_as_problem_md():
    ctx = context_d3()
    text = fmt.render(ctx, oracle.prove(ctx))
    assert text.endswith("Answer: C is true. C implies Y; Y is true. Y or Z implies S; S is true.")


def test_classify_error_classes():
    ctx = context_d3()  # OR, C true, K false: the proof goes through C
    right = oracle.prove(ctx)
    assert oracle.classify(ctx, right) == oracle.CORRECT
    assert oracle.classify(ctx, right + [fmt.PAD, fmt.PAD]) == oracle.CORRECT  # after EOS is ignored
    assert oracle.classify(ctx, right[:-1]) == oracle.MALFORMED  # no EOS
    assert oracle.classify(ctx, words("C T C -> Y . EOS")) == oracle.MALFORMED
    assert oracle.classify(ctx, words("K F . K -> Z ; Z U . Y or Z -> S ; S U . EOS")) == oracle.WRONG_BRANCH
    assert oracle.classify(ctx, words("W T . W -> H ; H T . H -> G ; G T . EOS")) == oracle.WRONG_FIRST_TOKEN
    assert oracle.classify(ctx, words("C T K F . C -> Y ; Y T . K -> Z ; Z U . Y or Z -> S ; S T . EOS")) == oracle.WRONG_BRANCH
    assert oracle.classify(ctx, words("C T . C -> Y ; Y U . Y or Z -> S ; S T . EOS")) == oracle.WRONG_TRUTH_VALUE
    assert oracle.classify(ctx, words("C T . C -> Y ; Y T . Y or Z -> G ; G T . EOS")) == oracle.WRONG_STEP
    assert not oracle.validate(ctx, words("C T . EOS"))


def test_a_false_step_value_is_a_wrong_truth_value_not_malformed():
    ctx = context_d3()
    assert oracle.classify(ctx, words("C T . C -> Y ; Y F . Y or Z -> S ; S T . EOS")) == oracle.WRONG_TRUTH_VALUE
    assert oracle.classify(ctx, words("C U . C -> Y ; Y T . Y or Z -> S ; S T . EOS")) == oracle.WRONG_TRUTH_VALUE
    assert oracle.classify(ctx, words("C T . C -> Y ; Y -> . Y or Z -> S ; S T . EOS")) == oracle.MALFORMED


def test_both_branches_in_the_other_order_is_a_wrong_step_not_a_wrong_branch():
    ctx = context_d3(AND, (("K", True), ("C", True), ("W", True)))  # the proof writes C's branch, then K's
    assert oracle.prove(ctx) == words("C T K T . C -> Y ; Y T . K -> Z ; Z T . Y and Z -> S ; S T . EOS")
    swapped = words("K T C T . K -> Z ; Z T . C -> Y ; Y T . Y and Z -> S ; S T . EOS")
    assert oracle.classify(ctx, swapped) == oracle.WRONG_STEP
    assert oracle.classify(ctx, words("K T . K -> Z ; Z T . Y and Z -> S ; S T . EOS")) == oracle.WRONG_BRANCH
    assert oracle.classify(ctx, words("W T . W -> H ; H T . H -> G ; G T . EOS")) == oracle.WRONG_FIRST_TOKEN


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda t: t[:-1], "matches no depth"),
        (lambda t: t[:1] + [TRUE] + t[2:], "position 1: expected IMPLIES, AND or OR, got TRUE"),
        (lambda t: t[:-1] + [DOT], "position 37: expected ANSWER"),
        (lambda t: [TRUE] + t[1:], "position 0: expected a variable"),
        (lambda t: t[:23] + [L["A"]] + t[24:], "facts: expected one fact for each chain source"),
        (lambda t: t[:34] + [L["Y"]] + t[35:], "query: Y ends neither chain"),
        (lambda t: t[:6] + [L["Y"]] + t[7:], "Y is the conclusion of two rules"),
        (lambda t: t[:9] + [IMPLIES] + t[10:], "position 11: expected ., got IMPLIES"),
    ],
)
def test_malformed_contexts_say_where(mutate, message):
    ctx = context_d3()
    assert ctx[22] == FACTS  # the layout the mutations assume
    with pytest.raises(ParseError, match=message):
        oracle.prove(mutate(list(ctx)))
