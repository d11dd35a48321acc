"""Text <-> token ids for a Mistral checkpoint, checked against the model's vocabulary.

Sources:

* ``"auto"``: the tokenizer saved in the checkpoint directory, or, when the directory has none,
  the sentencepiece model that mistral-common ships for the config's vocabulary (32768 tokens:
  v3, else v1).
* ``"directory"``: the checkpoint directory's tokenizer, required: ``tokenizer.json`` through
  ``AutoTokenizer``, else ``tokenizer.model`` through sentencepiece (transformers 5 rebuilds a
  bare ``.model`` without sentencepiece's leading-space rule, which gives other ids).
* ``"mistral_v1"``: ``mistral_common/data/tokenizer.model.v1`` (32000 pieces, Mistral-7B v0.1).
* ``"mistral_v3"``: ``mistral_common/data/mistral_instruct_tokenizer_240323.model.v3``
  (32768 pieces, the v0.3 vocabulary).

Whatever the source, its size must equal ``config.vocab_size``, else ``TokenizerMismatchError``.
A checkpoint's own tokenizer of a shipped vocabulary's size is compared with the shipped one on
a short problem text, with a ``TokenizerDifferenceWarning`` if they disagree (a tokenizer rebuilt
another way by a transformers version gives the model ids it was not trained on).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import warnings
from pathlib import Path
from typing import Callable

from logic_jax.models.mistral.config import MistralConfig
from logic_jax.models.mistral.loading import CheckpointError

SOURCES = ("auto", "directory", "mistral_v1", "mistral_v3")
_SHIPPED = {
    "mistral_v1": "tokenizer.model.v1",
    "mistral_v3": "mistral_instruct_tokenizer_240323.model.v3",
}
# Either of these in a checkpoint directory means it ships its own tokenizer. tokenizer_config.json
# alone does not: it holds settings, not the vocabulary, and AutoTokenizer cannot build from it.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class TokenizerMismatchError(CheckpointError):
    """The tokenizer's vocabulary is not the model's."""


class TokenizerDifferenceWarning(UserWarning):
    """A checkpoint's tokenizer encodes text other than mistral-common's of the same size."""


_SHIPPED_SIZES = {32000: "mistral_v1", 32768: "mistral_v3"}
_PROBE_TEXT = "Rules: A or B implies C. D implies E. Facts: A is true. B is false. Question: what is the truth value of C? Answer:"


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """The few operations generation needs, whatever library is underneath."""

    encode: Callable[[str], list[int]]  # adds the BOS token
    decode: Callable[[list[int]], str]
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    source: str  # where it came from, for messages


def shipped_tokenizer_path(name: str = "mistral_v1") -> Path:
    """Path of a sentencepiece model inside the installed mistral-common package."""
    return Path(str(importlib.resources.files("mistral_common") / "data" / _SHIPPED[name]))


def sentencepiece_tokenizer(model_file: str | os.PathLike) -> Tokenizer:
    """A sentencepiece ``.model`` file (Mistral's native format); encode prepends BOS."""
    import sentencepiece

    try:
        processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    except Exception as err:  # OSError, RuntimeError: callers catch CheckpointError
        raise CheckpointError(f"{model_file}: sentencepiece cannot read it ({type(err).__name__}: {err})") from err
    bos = processor.bos_id()
    return Tokenizer(
        encode=lambda text: [bos] + processor.encode(text),
        decode=lambda ids: processor.decode(list(ids)),
        vocab_size=processor.vocab_size(),
        bos_id=bos,
        eos_id=processor.eos_id(),
        source=str(model_file),
    )


def directory_tokenizer(checkpoint_dir: str | os.PathLike) -> Tokenizer:
    """``transformers.AutoTokenizer`` saved in the checkpoint directory (local files only)."""
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(str(checkpoint_dir), local_files_only=True)
    except Exception as err:  # transformers raises ValueError, OSError, JSON errors...: callers catch CheckpointError
        raise CheckpointError(f"{checkpoint_dir}: transformers cannot load the tokenizer there ({type(err).__name__}: {err})") from err
    bos = hf.bos_token_id

    def encode(text: str) -> list[int]:
        ids = hf.encode(text, add_special_tokens=True)
        # Mistral was trained with BOS first; a tokenizer_config.json without add_bos_token drops it.
        return ids if bos is None or ids[:1] == [bos] else [bos] + ids

    return Tokenizer(
        encode=encode,
        decode=lambda ids: hf.decode(list(ids), skip_special_tokens=True),
        vocab_size=len(hf),
        bos_id=bos,
        eos_id=hf.eos_token_id,
        source=f"AutoTokenizer({checkpoint_dir})",
    )


def has_tokenizer(checkpoint_dir: str | os.PathLike) -> bool:
    return any((Path(checkpoint_dir) / name).is_file() for name in _TOKENIZER_FILES)


def check_vocab(tokenizer: Tokenizer, config: MistralConfig) -> Tokenizer:
    """Raise ``TokenizerMismatchError`` unless the tokenizer covers exactly the model's vocabulary."""
    if tokenizer.vocab_size != config.vocab_size:
        raise TokenizerMismatchError(
            f"tokenizer {tokenizer.source} has {tokenizer.vocab_size} tokens but the model's "
            f"config.vocab_size is {config.vocab_size}: they do not belong together"
        )
    return tokenizer


def load_tokenizer(checkpoint_dir: str | os.PathLike, config: MistralConfig, source: str = "auto") -> Tokenizer:
    """The tokenizer for a checkpoint (see the module docstring for ``source``), vocab-checked."""
    if source not in SOURCES:
        raise ValueError(f"unknown tokenizer source {source!r}; choose one of {SOURCES}")
    if source == "directory" and not has_tokenizer(checkpoint_dir):
        raise CheckpointError(f"{checkpoint_dir}: no tokenizer file ({' or '.join(_TOKENIZER_FILES)}; tokenizer_config.json alone is not one)")
    own = source == "directory" or (source == "auto" and has_tokenizer(checkpoint_dir))
    if own and (Path(checkpoint_dir) / "tokenizer.json").is_file():
        tokenizer = directory_tokenizer(checkpoint_dir)
    elif own:
        tokenizer = sentencepiece_tokenizer(Path(checkpoint_dir) / "tokenizer.model")
    else:
        name = _SHIPPED_SIZES.get(config.vocab_size, "mistral_v1") if source == "auto" else source
        tokenizer = sentencepiece_tokenizer(shipped_tokenizer_path(name))
    check_vocab(tokenizer, config)
    if own:
        compare_with_shipped(tokenizer)
    return tokenizer


def compare_with_shipped(tokenizer: Tokenizer) -> None:
    """Warn if ``tokenizer`` encodes a problem text unlike mistral-common's tokenizer of its size."""
    name = _SHIPPED_SIZES.get(tokenizer.vocab_size)
    if name is None:
        return
    shipped = sentencepiece_tokenizer(shipped_tokenizer_path(name))
    ours, theirs = tokenizer.encode(_PROBE_TEXT), shipped.encode(_PROBE_TEXT)
    if ours != theirs:
        at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        warnings.warn(
            f"tokenizer {tokenizer.source} encodes {_PROBE_TEXT[:40]!r}... unlike mistral-common's {name} "
            f"({len(ours)} vs {len(theirs)} ids, first difference at id {at}: {ours[at:at + 3]} vs {theirs[at:at + 3]}); "
            f"if the checkpoint is Mistral-7B, pass --tokenizer={name}",
            TokenizerDifferenceWarning,
            stacklevel=3,
        )
