"""A host-memory cache of frozen text embeddings, keyed by example id.

The text encoder is frozen, so a caption's embedding never changes during training. On a small
CPU run the MiniLM forward pass costs about as much as the model's own step; caching the
embedding of each example the first time it is seen removes that cost from every later epoch.
The cache stops growing at `capacity` examples (0 turns it off).

Shape letters: B batch, N text tokens, E text width.
"""

from __future__ import annotations

import jax
import numpy as np

from almtok.text.minilm import TextEmbedding, TextEncoder, for_lm


class TextEmbeddingCache:
  """`embed(ids, mask, keys)` returns numpy embeddings, encoding only the unseen keys."""

  def __init__(self, encoder: TextEncoder, capacity: int):
    self._encoder = encoder
    self._capacity = capacity
    self._rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    self._apply = jax.jit(encoder.apply)
    self.hits = self.misses = 0

  def embed(self, ids_BxN: np.ndarray, mask_BxN: np.ndarray,
            keys_B: np.ndarray) -> TextEmbedding:
    """Embeddings of a batch (numpy; tokens float16 in the cache, returned as float32)."""
    missing = [i for i, k in enumerate(keys_B) if str(k) not in self._rows or not k]
    if missing:
      # The whole batch shape is encoded so that one compiled program serves every call.
      # The LM's conditioning (`for_lm`) is float16-rounded, so storing it as float16 loses
      # nothing: cached and fresh rows are the same numbers.
      out = jax.device_get(for_lm(self._apply(self._encoder.params, ids_BxN, mask_BxN)))
      fresh = {i: (out.tokens_BxNxE[i].astype(np.float16), out.mask_BxN[i], out.pooled_BxE[i])
               for i in missing}
      for i in missing:
        if keys_B[i] and len(self._rows) < self._capacity:
          self._rows[str(keys_B[i])] = fresh[i]
    else:
      fresh = {}
    self.misses += len(missing)
    self.hits += len(keys_B) - len(missing)
    rows = [fresh.get(i) or self._rows[str(k)] for i, k in enumerate(keys_B)]
    return TextEmbedding(np.stack([r[0] for r in rows]).astype(np.float32),
                         np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]))
