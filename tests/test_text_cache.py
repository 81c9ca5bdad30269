"""The training-time cache of frozen text embeddings returns what the encoder returns."""

import numpy as np

from almtok.text.cache import TextEmbeddingCache
from almtok.text.minilm import TextEncoder, for_lm


def test_cache_matches_encoder_and_stops_encoding_seen_keys():
  encoder = TextEncoder(max_len=8)
  cache = TextEmbeddingCache(encoder, capacity=3)
  captions = ["a dog barks", "rain on a roof", "a high beep", "white noise"]
  ids, mask = encoder.tokenizer(captions)
  keys = np.asarray(["a", "b", "c", "d"])
  first = cache.embed(ids, mask, keys)
  direct = encoder.encode(captions)
  np.testing.assert_allclose(first.pooled_BxE, direct.pooled_BxE, atol=1e-6)
  np.testing.assert_allclose(first.tokens_BxNxE, direct.tokens_BxNxE, atol=1e-2)  # float16.
  # Training (the cache) and generation (`encode_for_lm`) condition on the same numbers.
  np.testing.assert_array_equal(first.tokens_BxNxE, for_lm(direct).tokens_BxNxE)
  np.testing.assert_array_equal(encoder.encode_for_lm(captions).tokens_BxNxE,
                                first.tokens_BxNxE)
  np.testing.assert_array_equal(first.mask_BxN, direct.mask_BxN)
  assert (cache.hits, cache.misses) == (0, 4)
  # Reordered batch: the three cached keys are hits, the one beyond capacity is encoded again.
  order = np.array([3, 2, 1, 0])
  again = cache.embed(ids[order], mask[order], keys[order])
  assert (cache.hits, cache.misses) == (3, 5)
  np.testing.assert_allclose(again.pooled_BxE, np.asarray(direct.pooled_BxE)[order], atol=1e-6)
