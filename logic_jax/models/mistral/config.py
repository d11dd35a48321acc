"""The Mistral architecture's hyper-parameters, independent of any file format."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class MistralConfig:
    """Shape and numerics of a Mistral decoder (names follow Hugging Face's ``MistralConfig``).

    ``sliding_window=None`` means full causal attention; an int ``w`` lets query ``q`` see keys
    ``k`` with ``q - w < k <= q`` (the key itself and the ``w - 1`` before it), as transformers does.
    """

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    sliding_window: int | None = 4096
    max_position_embeddings: int = 32768
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window={self.sliding_window} must be >= 1 or None")

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.num_heads // self.num_kv_heads

    @classmethod
    def mistral_7b_v01(cls) -> "MistralConfig":
        """mistralai/Mistral-7B-v0.1: 32k vocab, rope theta 1e4, sliding window 4096."""
        return cls()

    @classmethod
    def mistral_7b_v03(cls) -> "MistralConfig":
        """mistralai/Mistral-7B-v0.3: 32768 vocab, rope theta 1e6, no sliding window."""
        return cls(vocab_size=32768, rope_theta=1e6, sliding_window=None)

    @classmethod
    def small(cls) -> "MistralConfig":
        """A CPU-sized model with the 7B's proportions (GQA 4:1, explicit head_dim)."""
        return cls(
            vocab_size=32000,
            hidden_size=256,
            intermediate_size=896,
            num_layers=4,
            num_heads=8,
            num_kv_heads=2,
            head_dim=32,
            sliding_window=4096,
        )
