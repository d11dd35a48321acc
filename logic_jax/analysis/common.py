"""What every analysis shares: settings, problem sets, per-seed params, chunked compiled runs, stats."""

from __future__ import annotations

import dataclasses
import functools
import os
import zlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from logic_jax.models import gpt
from logic_jax.problem import format as fmt
from logic_jax.problem.config import ProblemConfig
from logic_jax.problem.sampler import Batch, sample


class AnalysisError(ValueError):
    """An analysis that cannot run as asked; the message names the setting or input."""


def check_out_dir(workdir: str, out_dir: str) -> None:
    """``--out`` may not be the workdir: the report's files (summary.csv of a sweep) would replace the run's."""
    if os.path.realpath(out_dir) == os.path.realpath(workdir):
        raise AnalysisError(f"--out {out_dir} is the workdir itself: the report's files would mix with (and replace) the run's; choose another directory")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes and layers of one analysis run (the defaults are the paper's sizes).

    ``route_layer`` / ``read_layer`` are 0-indexed blocks; None means the paper's choice for a
    3-layer model, generalised: the second-to-last block ("layer 2") routes, the last block
    ("layer 3") reads.
    """

    n_accuracy: int = 2048  # held-out problems decoded for exact match (claim 1)
    n_attention: int = 1000  # problems per query type for layer-3 attention (claim 3)
    n_routing: int = 1000  # problems for the cosine matrix, half of each query type (claim 2)
    n_probe_train: int = 5000  # per query type (claim 4)
    n_probe_test: int = 5000
    probe_steps: int = 300  # full-batch Adam steps of each probe
    probe_l2: float = 1e-3
    n_patch: int = 256  # pairs per patching / ablation batch
    route_layer: int | None = None
    read_layer: int | None = None
    chunk: int = 1024  # problems per compiled forward
    key: int = 0  # the analysis problems' seed (apart from training's streams)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("route_layer", "read_layer") and value is None:
                continue
            if f.name == "probe_l2":
                if not isinstance(value, (int, float)) or value < 0:
                    raise AnalysisError(f"analysis setting '{f.name}': must be a number >= 0, got {value!r}")
                continue
            minimum = 0 if f.name in ("route_layer", "read_layer", "key") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise AnalysisError(f"analysis setting '{f.name}': must be an integer >= {minimum}, got {value!r}")
        if self.n_routing < 4:
            raise AnalysisError(f"analysis setting 'n_routing': needs at least 4 problems (2 per query type), got {self.n_routing}")
        if self.n_patch > self.n_attention:
            raise AnalysisError(f"analysis setting 'n_patch'={self.n_patch}: the head ablation takes its problems from the attention "
                                f"problems, so it must be at most n_attention={self.n_attention}")

    def layers(self, n_layers: int) -> tuple[int, int]:
        """(route, read) blocks for a model of ``n_layers`` blocks, checked."""
        route = max(n_layers - 2, 0) if self.route_layer is None else self.route_layer
        read = n_layers - 1 if self.read_layer is None else self.read_layer
        for name, value in (("route_layer", route), ("read_layer", read)):
            if not 0 <= value < n_layers:
                raise AnalysisError(f"analysis setting '{name}'={value}: the model has blocks 0..{n_layers - 1}")
        return route, read


def layer_name(block: int) -> str:
    """``layer_name(1)`` -> ``"layer 2 (blocks.1)"``: the paper's 1-indexed name and the hook name."""
    return f"layer {block + 1} (blocks.{block})"


# --- Problems ---------------------------------------------------------------------------------
def pin(cfg: ProblemConfig, query: str | None = None, op: str | None = None) -> ProblemConfig:
    """``cfg`` with the queried chain ("logop"/"linear") and/or the operator ("or"/"and") fixed.

    What is not given stays as the run had it (a model trained on OR only is analysed on OR
    only). A choice the run never trained on (p_logop or p_and at 0 or 1) is still drawn, off
    the run's distribution: its probability is moved so that the config is valid, and
    ``unseen`` names it for the report.
    """
    changes = {}
    if query is not None:
        changes["fix_query"] = query
        if cfg.p_logop in (0.0, 1.0):
            changes["p_logop"] = 1.0 if query == "logop" else 0.0
    if op is not None:
        changes["fix_op"] = op
        if cfg.p_and in (0.0, 1.0):
            changes["p_and"] = 1.0 if op == "and" else 0.0
    return dataclasses.replace(cfg, **changes)


def unseen(cfg: ProblemConfig) -> list[str]:
    """The query types, operators and fact values that the analysis draws but the run never trained on."""
    logop = "logop" if cfg.fix_query == "logop" or cfg.p_logop == 1.0 else "linear" if cfg.fix_query == "linear" or cfg.p_logop == 0.0 else None
    op = "or" if cfg.fix_op == "or" or cfg.p_and == 0.0 else "and" if cfg.fix_op == "and" or cfg.p_and == 1.0 else None
    notes = []
    if logop is not None:
        other = "linear" if logop == "logop" else "LogOp"
        notes.append(f"the run trained on {'LogOp' if logop == 'logop' else 'linear'} queries only: every number on {other} queries "
                     "(claims 2-4, the routing patch, query-switch pairs) is measured off its training distribution")
    if op is not None:
        notes.append(f"the run trained on {op.upper()} only: operator-flip pairs and any {'AND' if op == 'or' else 'OR'} problem are off its training distribution")
    if cfg.p_true in (0.0, 1.0):
        notes.append(f"the run saw only {'TRUE' if cfg.p_true else 'FALSE'} facts: fact-flip pairs are off its training distribution")
    return notes


def problems(key: jax.Array, cfg: ProblemConfig, n: int, query: str | None = None, op: str | None = None) -> Batch:
    """``n`` problems of ``cfg``, the query chain and operator optionally fixed (``pin``)."""
    return host(sample(key, pin(cfg, query, op), n))


def host(tree: Any) -> Any:
    """Numpy copies of a batch's arrays: slicing them on the host compiles nothing."""
    return jax.tree.map(np.asarray, jax.device_get(tree))


def split(batch: Any, sizes: Sequence[int]) -> list:
    """Consecutive slices of ``sizes`` rows (sampling once and splitting compiles the sampler once)."""
    if sum(sizes) > int(jax.tree.leaves(batch)[0].shape[0]):
        raise AnalysisError(f"cannot split {int(jax.tree.leaves(batch)[0].shape[0])} rows into {list(sizes)}")
    starts = np.cumsum([0] + list(sizes))
    return [take(batch, slice(int(a), int(b))) for a, b in zip(starts[:-1], starts[1:])]


def concat(*batches: Any) -> Any:
    """Batches (or any pytrees with a leading batch axis) one after the other."""
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *batches)


def take(batch: Any, rows: Any) -> Any:
    """Rows of every array of a batch, on the host."""
    return jax.tree.map(lambda x: np.asarray(x)[rows], batch)


def context(batch: Batch) -> jax.Array:
    """``[B, context_len]``: the tokens up to ANSWER (all that predicts the first answer token)."""
    return batch.tokens[:, : int(batch.answer_pos[0]) + 1]


def analysis_key(settings: Settings, stream: str) -> jax.Array:
    """A key per analysis, apart from each other and from the trainer's streams."""
    return jax.random.fold_in(jax.random.PRNGKey(settings.key), zlib.crc32(f"analysis/{stream}".encode()) & 0x7FFFFFFF)


# --- Parameters of one seed -------------------------------------------------------------------
def num_seeds(stacked: Any) -> int:
    return int(jax.tree.leaves(stacked)[0].shape[0])


def seed_params(stacked: Any, index: int) -> Any:
    """One member of parameters stacked over seeds (leading axis)."""
    n = num_seeds(stacked)
    if not 0 <= index < n:
        raise AnalysisError(f"seed index {index} out of range: the checkpoint holds seeds 0..{n - 1}")
    return jax.tree.map(lambda x: np.asarray(x)[index], stacked)  # on the host: no compilation per leaf shape


@functools.lru_cache(maxsize=None)
def forward_for(cfg: gpt.GPTConfig):
    """One forward function object per model config, so compiled analyses are reused across seeds."""
    return gpt.make_forward(cfg)


# --- Chunked compiled runs ----------------------------------------------------------------------
def map_chunks(fn: Callable, params: Any, arrays: Sequence[Any], chunk: int) -> Any:
    """``fn(params, *arrays)`` over slices of ``chunk`` rows, outputs concatenated on axis 0.

    The last slice is padded to ``chunk`` rows, so ``fn`` compiles once.
    """
    n = int(jax.tree.leaves(arrays)[0].shape[0])
    size = min(chunk, n)
    outs = []
    for start in range(0, n, size):
        part = jax.tree.map(lambda x: x[start : start + size], arrays)
        rows = int(jax.tree.leaves(part)[0].shape[0])
        if rows < size:
            part = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], size - rows, 0)]), part)
        out = jax.device_get(fn(params, *part))
        outs.append(jax.tree.map(lambda x: np.asarray(x)[:rows], out))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


# --- Numbers ------------------------------------------------------------------------------------
def stats(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean, standard deviation (over seeds, ddof 0), min and max, ignoring missing values."""
    xs = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if xs.size == 0:
        return dict(mean=None, std=None, min=None, max=None)
    return dict(mean=float(xs.mean()), std=float(xs.std()), min=float(xs.min()), max=float(xs.max()))


def to_json(x: Any) -> Any:
    """JSON-able: arrays to lists, numpy scalars to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return to_json(np.asarray(x).tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    return x


def token_labels(tokens: Sequence[int]) -> list[str]:
    """Short display names of token ids (letters, AND, OR, '->' for IMPLIES, T/F for facts, ...)."""
    short = {fmt.IMPLIES: "->", fmt.TRUE: "T", fmt.FALSE: "F", fmt.UNDETERMINED: "U", fmt.FACTS: "FACTS", fmt.END_FACTS: "END_F",
             fmt.QUESTION: "Q:", fmt.END_QUESTION: "END_Q", fmt.ANSWER: "ANS", fmt.DOT: ".", fmt.SEMI: ";", fmt.PAD: "_"}
    return [short.get(int(t), fmt.TOKEN_NAMES.get(int(t), str(int(t)))) for t in tokens]


def position_roles(depth: int, logop_first: bool = True) -> list[str]:
    """What each context position holds when the chains' order is fixed (``fix_logop_chain_first``).

    Letters by chain slot (a_i, b_i, c_i; x OP y the LogOp rule's operands, in random order),
    facts by written slot (their order is random).
    """
    logop: list[str] = []
    for i in range(depth - 2):
        logop += [f"a{i}", "->", f"a{i + 1}", ".", f"b{i}", "->", f"b{i + 1}", "."]
    logop += ["x", "OP", "y", "->", f"a{depth - 1}", "."]
    linear = [role for i in range(depth - 1) for role in (f"c{i}", "->", f"c{i + 1}", ".")]
    roles = logop + linear if logop_first else linear + logop
    roles.append("FACTS")
    for k in range(1, 4):
        roles += [f"fact{k}", "T/F", "."]
    roles += ["END_F", "Q:", "QUERY", ".", "END_Q", "ANS"]
    assert len(roles) == fmt.context_len(depth), (len(roles), fmt.context_len(depth))
    return roles
