"""The sampler's problem config: every choice of problem.md as a field, checked up front."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping

from logic_jax import dataclass_config
from logic_jax.problem import format as fmt


# jax.random.key keeps 32 bits of a seed (x64 off): 2**32 would silently repeat seed 0.
MAX_SEED = 2**32 - 1


class ConfigError(ValueError):
    """A problem config that cannot be sampled; the message names the field."""


@dataclasses.dataclass(frozen=True)
class ProblemConfig:
    """What the sampler draws. Hashable, so it is a static argument of jit.

    The ``fix_*`` fields pin one latent choice (None leaves it random):
    ``fix_query`` "logop"|"linear"; ``fix_op`` "or"|"and"; ``fix_truth_first``,
    ``fix_truth_second`` the source facts of the LogOp rule's first and second operand's
    branches, ``fix_truth_linear`` the linear chain's source; ``fix_logop_chain_first``
    whether the LogOp chain's rules are written first; ``fix_operands_swapped`` whether the
    LogOp rule reads ``b OP a`` instead of ``a OP b``. ``p_true``: the probability that each
    source fact is TRUE (at 0.5, one fair bit each). ``shuffle_facts`` False writes the facts
    of a_0, b_0, c_0 in that order (the problem is otherwise the one the same key draws shuffled).
    """

    depth: int = 3
    p_logop: float = 0.8
    p_and: float = 0.5
    p_true: float = 0.5
    shuffle_rules: bool = False
    shuffle_facts: bool = True
    fix_query: str | None = None
    fix_op: str | None = None
    fix_truth_first: bool | None = None
    fix_truth_second: bool | None = None
    fix_truth_linear: bool | None = None
    fix_logop_chain_first: bool | None = None
    fix_operands_swapped: bool | None = None

    def __post_init__(self):
        # numpy scalars (a sweep built with np.linspace) become Python numbers: hashable alike, JSON-able.
        for name, kind, cast in (("depth", numbers.Integral, int), ("p_logop", numbers.Real, float), ("p_and", numbers.Real, float), ("p_true", numbers.Real, float)):
            value = getattr(self, name)
            if isinstance(value, kind) and not isinstance(value, bool):
                object.__setattr__(self, name, cast(value))
        validate(self)

    @property
    def context_len(self) -> int:
        return fmt.context_len(self.depth)

    @property
    def seq_len(self) -> int:
        return fmt.seq_len(self.depth)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "ProblemConfig":
        """From a dict or ml_collections ConfigDict; unknown keys are an error naming them."""
        return dataclass_config.from_mapping(cls, values, ConfigError, "problem")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"problem config field '{field}': {message}")


def validate(cfg: ProblemConfig) -> None:
    _check(
        isinstance(cfg.depth, int) and not isinstance(cfg.depth, bool) and fmt.MIN_DEPTH <= cfg.depth <= fmt.MAX_DEPTH,
        "depth",
        f"must be an integer in [{fmt.MIN_DEPTH}, {fmt.MAX_DEPTH}] (3 letters per level must fit in 26), got {cfg.depth!r}",
    )
    for name in ("p_logop", "p_and", "p_true"):
        p = getattr(cfg, name)
        _check(isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p <= 1.0, name, f"must be a probability in [0, 1], got {p!r}")
    _check(isinstance(cfg.shuffle_rules, bool), "shuffle_rules", f"must be a bool, got {cfg.shuffle_rules!r}")
    _check(isinstance(cfg.shuffle_facts, bool), "shuffle_facts", f"must be a bool, got {cfg.shuffle_facts!r}")
    _check(cfg.fix_query in (None, "logop", "linear"), "fix_query", f"must be None, 'logop' or 'linear', got {cfg.fix_query!r}")
    _check(cfg.fix_op in (None, "or", "and"), "fix_op", f"must be None, 'or' or 'and', got {cfg.fix_op!r}")
    for name in ("fix_truth_first", "fix_truth_second", "fix_truth_linear", "fix_logop_chain_first", "fix_operands_swapped"):
        value = getattr(cfg, name)
        _check(value is None or isinstance(value, bool), name, f"must be None, True or False, got {value!r}")
    # A fixed value that the probabilities make impossible.
    _check(not (cfg.fix_query == "logop" and cfg.p_logop == 0.0), "fix_query", "'logop' contradicts p_logop=0")
    _check(not (cfg.fix_query == "linear" and cfg.p_logop == 1.0), "fix_query", "'linear' contradicts p_logop=1")
    _check(not (cfg.fix_op == "and" and cfg.p_and == 0.0), "fix_op", "'and' contradicts p_and=0")
    _check(not (cfg.fix_op == "or" and cfg.p_and == 1.0), "fix_op", "'or' contradicts p_and=1")
    for name in ("fix_truth_first", "fix_truth_second", "fix_truth_linear"):
        value = getattr(cfg, name)
        _check(not (value is True and cfg.p_true == 0.0), name, "True contradicts p_true=0")
        _check(not (value is False and cfg.p_true == 1.0), name, "False contradicts p_true=1")
    # Chain and operand order are written out only when rules are not shuffled.
    _check(
        not (cfg.shuffle_rules and cfg.fix_logop_chain_first is not None),
        "fix_logop_chain_first",
        "contradicts shuffle_rules=True (shuffled rules have no chain order)",
    )
