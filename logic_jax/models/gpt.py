"""The small decoder-only transformer of Part 1 (GPT-2-like), with TransformerLens-named hooks.

Pre-LayerNorm blocks, GELU MLP, learned positional embeddings, causal attention, untied
unembedding. Weights use TransformerLens layouts (``W_Q`` [d_model, n_heads, d_head],
``W_O`` [n_heads, d_head, d_model]) so per-head analyses index a head axis directly.

Two ways in:

* ``GPT(cfg, rngs=...)`` is an ``nnx.Module``: ``model(tokens, hooks)`` -> logits;
* ``init_params(key, cfg)`` and ``make_forward(cfg)`` are the pure, functional form the
  trainer and the interpretability code use: ``params`` is a plain nested dict of arrays
  (``nnx.to_pure_dict``; layer ``i`` is ``params["blocks"][i]``), so seeds stack with
  ``jax.vmap`` and checkpoint as ordinary pytrees.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from logic_jax import dataclass_config
from logic_jax.interp.hooks import Hooks, Patch, block_site, site_names
from logic_jax.models.inputs import check_tokens, embed_rows
from logic_jax.problem import format as fmt

Array = jax.Array
Params = dict  # nested dict of arrays, as nnx.to_pure_dict gives


DTYPES = ("float32", "bfloat16")
# jax.default_matmul_precision's names. On GPUs "default" may let XLA use TF32 tensor cores for
# float32 and "float32" forbids it ("bfloat16" lowers to the same DEFAULT as "default": bfloat16
# on TPUs only); the upper-case ones name the algorithm exactly (inputs rounded to TF32 or
# bfloat16, float32 accumulation). Only GPUs have TF32: elsewhere TF32_TF32_F32 computes float32
# (XLA refuses to compile it), so a GPU run's checkpoint still reads on a CPU.
MATMUL_PRECISIONS = ("default", "tensorfloat32", "float32", "bfloat16", "high", "highest", "TF32_TF32_F32", "BF16_BF16_F32", "F32_F32_F32")
# What the backward pass keeps of a block (jax.checkpoint): everything ("none"); its input alone,
# recomputing the rest, about one more forward ("block"); its matmul outputs, recomputing the
# elementwise ops ("dots").
REMATS = ("none", "block", "dots")
# How attention is computed where no hook records or patches it (training, evaluation): the
# einsums below ("einsum"), or jax.nn.dot_product_attention ("fused": cuDNN's flash attention on
# an NVIDIA GPU with bfloat16 activations, which takes the [batch, pos, head, d_head] layout as
# it is and never writes the scores; XLA's version of the same math elsewhere, so a checkpoint
# reads anywhere). A forward that caches or patches a site always takes the einsums: the scores
# and the pattern are hook sites.
ATTENTIONS = ("einsum", "fused")


class GPTConfigError(ValueError):
    """A model config that cannot be built; the message names the field."""


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Model shape. Frozen and hashable: a static argument of jit."""

    vocab_size: int = fmt.VOCAB_SIZE
    max_len: int = fmt.seq_len(3)  # positional embeddings; at least the problem's seq_len
    n_layers: int = 3
    n_heads: int = 3
    d_model: int = 96
    d_mlp: int = 384
    ln_eps: float = 1e-5
    init_std: float = 0.02  # GPT-2's normal init
    # Numerics of the forward. Parameters stay float32; with dtype "bfloat16" activations and
    # matmul inputs are bfloat16 (LayerNorm statistics, softmax and logits in float32).
    dtype: str = "float32"
    matmul_precision: str = "default"  # jax.default_matmul_precision for float32 matmuls
    remat: str = "none"  # memory, not math: see REMATS (forwards that cache or patch sites keep all)
    attention: str = "einsum"  # speed, not math: see ATTENTIONS

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "n_layers", "n_heads", "d_model", "d_mlp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GPTConfigError(f"model config field '{name}': must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise GPTConfigError(
                f"model config field 'd_model': {self.d_model} is not divisible by n_heads={self.n_heads}"
            )
        if not self.ln_eps > 0:
            raise GPTConfigError(f"model config field 'ln_eps': must be > 0, got {self.ln_eps!r}")
        if self.dtype not in DTYPES:
            raise GPTConfigError(f"model config field 'dtype': must be one of {DTYPES}, got {self.dtype!r}")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise GPTConfigError(f"model config field 'matmul_precision': must be one of {MATMUL_PRECISIONS}, got {self.matmul_precision!r}")
        if self.remat not in REMATS:
            raise GPTConfigError(f"model config field 'remat': must be one of {REMATS}, got {self.remat!r}")
        if self.attention not in ATTENTIONS:
            raise GPTConfigError(f"model config field 'attention': must be one of {ATTENTIONS}, got {self.attention!r}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "GPTConfig":
        """From a dict or ConfigDict; unknown keys are an error naming them."""
        return dataclass_config.from_mapping(cls, values, GPTConfigError, "model")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sites(cfg: GPTConfig) -> tuple[str, ...]:
    """Every hook site the model calls, in forward order (pass as ``known=`` to ``Hooks``)."""
    return site_names(cfg.n_layers)


def _no_hooks(name: str, x: Array) -> Array:
    return x


def _records_nothing(hooks) -> bool:
    return hooks is _no_hooks or getattr(hooks, "passive", False)


def _fused_attention(q: Array, k: Array, v: Array, scale: float) -> Array:
    """Causal attention of [batch, pos, head, d_head] q, k, v -> z, the same layout."""
    cudnn = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
    return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True, implementation="cudnn" if cudnn else "xla")


def _matmul_precision(cfg: GPTConfig) -> str:
    if cfg.matmul_precision == "TF32_TF32_F32" and jax.default_backend() != "gpu":
        return "float32"
    return cfg.matmul_precision


def _cast(param: nnx.Param, dtype: str) -> Array:
    return param[...].astype(dtype)


def _add_bias(x: Array, bias: nnx.Param, dtype: str) -> Array:
    # The sum in float32, then rounded: with bfloat16 activations the backward pass then sums a
    # bias' gradient over batch and positions in float32 (in bfloat16 it is tens of % off).
    return (x.astype(jnp.float32) + bias[...]).astype(dtype)


def _layer_norm(cfg: GPTConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # Statistics in float32 whatever the dtype (flax's default); float32 scale and bias.
    return nnx.LayerNorm(cfg.d_model, epsilon=cfg.ln_eps, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.float32, rngs=rngs)


def _normal(cfg: GPTConfig, std: float | None = None):
    return nnx.initializers.normal(cfg.init_std if std is None else std)


class Attention(nnx.Module):
    def __init__(self, cfg: GPTConfig, layer: int, *, rngs: nnx.Rngs):
        d, h, e = cfg.d_model, cfg.n_heads, cfg.d_head
        init = _normal(cfg)
        # GPT-2 scales the residual-writing projections by 1/sqrt(2 n_layers).
        out_init = _normal(cfg, cfg.init_std / math.sqrt(2 * cfg.n_layers))
        self.W_Q = nnx.Param(init(rngs.params(), (d, h, e)))
        self.W_K = nnx.Param(init(rngs.params(), (d, h, e)))
        self.W_V = nnx.Param(init(rngs.params(), (d, h, e)))
        self.W_O = nnx.Param(out_init(rngs.params(), (h, e, d)))
        self.b_Q = nnx.Param(jnp.zeros((h, e)))
        # No key bias: q . b_K is the same for every key, so softmax ignores it; its gradient
        # is rounding noise that Adam would amplify into lr-sized random steps.
        self.b_V = nnx.Param(jnp.zeros((h, e)))
        self.b_O = nnx.Param(jnp.zeros((d,)))
        self.layer = layer
        self.scale = 1.0 / math.sqrt(e)
        self.dtype = cfg.dtype
        self.fused = cfg.attention == "fused"

    def __call__(self, x: Array, hooks) -> Array:
        site = functools.partial(block_site, self.layer)
        w = functools.partial(_cast, dtype=self.dtype)
        bias = functools.partial(_add_bias, dtype=self.dtype)
        q = hooks(site("hook_q"), bias(jnp.einsum("bpd,dhe->bphe", x, w(self.W_Q)), self.b_Q))
        k = hooks(site("hook_k"), jnp.einsum("bpd,dhe->bphe", x, w(self.W_K)))
        v = hooks(site("hook_v"), bias(jnp.einsum("bpd,dhe->bphe", x, w(self.W_V)), self.b_V))
        if self.fused and _records_nothing(hooks):
            z = _fused_attention(q, k, v, self.scale)
        else:
            z = self._attend(q, k, v, hooks)
        z = hooks(site("hook_z"), z)
        return bias(jnp.einsum("bqhe,hed->bqd", z, w(self.W_O)), self.b_O)

    def _attend(self, q: Array, k: Array, v: Array, hooks) -> Array:
        site = functools.partial(block_site, self.layer)
        scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) * self.scale
        n = q.shape[1]
        causal = jnp.tril(jnp.ones((n, n), bool))
        # A finite fill (not -inf) keeps cached scores usable in means and plots.
        scores = hooks(site("hook_attn_scores"), jnp.where(causal, scores, jnp.asarray(-1e9, scores.dtype)))
        pattern = hooks(site("hook_pattern"), jax.nn.softmax(scores.astype(jnp.float32), axis=-1))
        return jnp.einsum("bhqk,bkhe->bqhe", pattern.astype(self.dtype), v)


class MLP(nnx.Module):
    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
        self.W_in = nnx.Param(_normal(cfg)(rngs.params(), (cfg.d_model, cfg.d_mlp)))
        self.b_in = nnx.Param(jnp.zeros((cfg.d_mlp,)))
        out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        self.W_out = nnx.Param(_normal(cfg, out_std)(rngs.params(), (cfg.d_mlp, cfg.d_model)))
        self.b_out = nnx.Param(jnp.zeros((cfg.d_model,)))
        self.dtype = cfg.dtype

    def __call__(self, x: Array) -> Array:
        w = functools.partial(_cast, dtype=self.dtype)
        bias = functools.partial(_add_bias, dtype=self.dtype)
        # tanh GELU, as GPT-2.
        return bias(jax.nn.gelu(bias(x @ w(self.W_in), self.b_in), approximate=True) @ w(self.W_out), self.b_out)


class Block(nnx.Module):
    def __init__(self, cfg: GPTConfig, layer: int, *, rngs: nnx.Rngs):
        self.ln1 = _layer_norm(cfg, rngs)
        self.attn = Attention(cfg, layer, rngs=rngs)
        self.ln2 = _layer_norm(cfg, rngs)
        self.mlp = MLP(cfg, rngs=rngs)
        self.layer = layer

    def __call__(self, x: Array, hooks, keep_from: int = 0) -> Array:
        """-> the residual stream at positions ``keep_from`` on (every position attends to all)."""
        site = functools.partial(block_site, self.layer)
        x = hooks(site("hook_resid_pre"), x)
        x = hooks(site("hook_resid_mid"), x + hooks(site("hook_attn_out"), self.attn(self.ln1(x), hooks)))[:, keep_from:]
        return hooks(site("hook_resid_post"), x + hooks(site("hook_mlp_out"), self.mlp(self.ln2(x))))


class GPT(nnx.Module):
    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.W_E = nnx.Param(_normal(cfg)(rngs.params(), (cfg.vocab_size, cfg.d_model)))
        self.W_pos = nnx.Param(_normal(cfg, 0.01)(rngs.params(), (cfg.max_len, cfg.d_model)))
        # A Python loop over layers, so every site has its own name.
        self.blocks = nnx.List([Block(cfg, i, rngs=rngs) for i in range(cfg.n_layers)])
        self.ln_final = _layer_norm(cfg, rngs)
        self.W_U = nnx.Param(_normal(cfg)(rngs.params(), (cfg.d_model, cfg.vocab_size)))
        self.b_U = nnx.Param(jnp.zeros((cfg.vocab_size,)))

    def __call__(self, tokens: Array, hooks: Hooks | None = None, logits_from: int = 0) -> Array:
        """int tokens [B, L] (L <= max_len) -> float32 logits [B, L - logits_from, vocab].

        ``logits_from`` > 0 (training, where only the answer has a loss) skips what only the
        earlier positions' logits need: the last block's MLP there, the final LayerNorm and the
        unembedding. Their keys and values still reach the later positions.
        """
        hooks = _no_hooks if hooks is None else hooks
        check_tokens(tokens, self.cfg.vocab_size)
        length = tokens.shape[-1]
        if length > self.cfg.max_len:
            raise ValueError(f"sequence length {length} exceeds the model's max_len={self.cfg.max_len}")
        if not 0 <= logits_from < length:
            raise ValueError(f"logits_from={logits_from} is outside the sequence (length {length})")
        if logits_from and not _records_nothing(hooks):
            raise ValueError("logits_from > 0 leaves the last block's sites short: cache or patch with logits_from=0")
        w = functools.partial(_cast, dtype=self.cfg.dtype)
        # Read while tracing: the backward pass keeps each matmul's precision.
        with jax.default_matmul_precision(_matmul_precision(self.cfg)):
            # Rows taken from the float32 tables, then rounded: their gradients (a scatter-add over
            # tokens, a sum over the batch) accumulate in float32.
            embed = hooks("hook_embed", embed_rows(self.W_E[...], tokens).astype(self.cfg.dtype))
            pos = hooks("hook_pos_embed", jnp.broadcast_to(self.W_pos[...][:length], embed.shape).astype(self.cfg.dtype))
            x = embed + pos
            for i, block in enumerate(self.blocks):
                x = self._block(block, x, hooks, logits_from if i == self.cfg.n_layers - 1 else 0)
            return (self.ln_final(x) @ w(self.W_U)).astype(jnp.float32) + self.b_U[...]

    def _block(self, block: Block, x: Array, hooks, keep_from: int) -> Array:
        # Only a forward whose hooks record nothing: a cached or patched site's array would be a
        # tracer of the rematerialised function, leaked out of it.
        if self.cfg.remat == "none" or not _records_nothing(hooks):
            return block(x, hooks, keep_from)
        policy = jax.checkpoint_policies.dots_saveable if self.cfg.remat == "dots" else None
        return nnx.remat(lambda b, y: b(y, hooks, keep_from), policy=policy)(block, x)


# --- The functional form ---------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _abstract(cfg: GPTConfig):
    """Graph definition and abstract state, without allocating weights."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0))))
    return graphdef, state


def init_params(key: Array, cfg: GPTConfig) -> Params:
    """Fresh parameters as a nested dict of arrays (deterministic in ``key``)."""
    _, state = nnx.split(GPT(cfg, rngs=nnx.Rngs(params=key)))
    return nnx.to_pure_dict(state)


def abstract_params(cfg: GPTConfig) -> Params:
    """``jax.ShapeDtypeStruct``s of ``init_params``' output (for checkpoint restore)."""
    return jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), cfg))


def bind(cfg: GPTConfig, params: Params) -> GPT:
    """An ``nnx`` module holding ``params`` (e.g. to call it with a ``Hooks`` object)."""
    graphdef, state = _abstract(cfg)
    state = jax.tree.map(lambda x: x, state)  # a copy: replace_by_pure_dict edits in place
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


def make_forward(cfg: GPTConfig):
    """The pure ``forward(params, tokens, patches=None, cache=(), logits_from=0) -> (logits, {site: x})``.

    ``patches`` maps site names to ``Patch``es (arrays inside may be traced, so a sweep of
    patches is one ``vmap``); ``cache`` names the sites whose activations come back. An unknown
    site in either is a ``KeyError``. ``logits_from``: logits of the positions from there on
    only (see ``GPT.__call__``).
    """
    known = sites(cfg)

    def forward(params: Params, tokens: Array, patches: Mapping[str, Patch] | None = None, cache: Iterable[str] = (), logits_from: int = 0):
        hooks = Hooks(patches, cache, known=known)
        logits = bind(cfg, params)(tokens, hooks, logits_from)
        return logits, hooks.cache

    return forward


def param_count(params: Params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
