"""almtok's contrastive text-audio model (CLAP-style), the judge's second learned view of how well
a clip answers its caption.

No pretrained CLAP can be downloaded here, so this one is trained in the codebase on the same
clips as the tagger (`train_clap.py`), and the metrics it gives say so in their names
(`clap_score`, `clap_r1`, `clap_r10`). It shares no weights and no network with the tagger; it
shares the training clips and the 64-bin log-mel on the same perceptual floor (`floor_db`).

Audio branch: the log-mel as 64 channels of a 1-D signal over frames (the tagger's front end is
a 2-D CNN): a 1-D convolution, three stride-2 blocks (convolution, LayerNorm, GELU, and a dilated
residual convolution) down to an 80 ms grid, attention pooling and mean pooling over the clip's
real frames, and an MLP to the joint space.
Text branch: the frozen MiniLM-L6 token states (`text/minilm.py`, the LM's text encoder),
attention pooling and mean pooling over real tokens, and an MLP to the joint space.
Both outputs are L2-normalised; their cosine times a learned scale (exp of `log_scale`, at most
100) are the logits of a symmetric InfoNCE loss in which clips of the same caption are all
positives.

Shape letters: B clips of a batch, N clips, M mel bins, F frames, T reduced frames, C channels,
L text tokens, E text width, P joint-space width, U distinct captions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import numpy as st_numpy

from almtok import audio
from almtok import checkpoint
from almtok import fileio
from almtok.evaluation import tagger as tagger_lib

Array = jax.Array

EXPORT_STEM = "clap"
FORMAT = "almtok-clap-1"
STRIDES = 3   # Stride-2 blocks: frames are reduced 8x (80 ms at 100 frames a second).
MAX_LOG_SCALE = float(np.log(100.0))


def _pool(h_BxTxC: Array, valid_BxT: Array, score: nnx.Linear) -> Array:
  """[attention-pooled, mean-pooled] over the valid positions (frames or tokens) [B, 2C]."""
  w_BxT = jnp.where(valid_BxT, score(h_BxTxC)[..., 0], -1e9)
  attn_BxC = jnp.einsum("bt,btc->bc", jax.nn.softmax(w_BxT, axis=-1), h_BxTxC)
  weight_BxTx1 = valid_BxT[..., None].astype(h_BxTxC.dtype)
  mean_BxC = jnp.sum(h_BxTxC * weight_BxTx1, 1) / jnp.maximum(jnp.sum(weight_BxTx1, 1), 1.0)
  return jnp.concatenate([attn_BxC, mean_BxC], axis=-1)


def _normalize(x: Array) -> Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


class Projection(nnx.Module):
  """MLP to the joint space: Linear, GELU, Linear."""

  def __init__(self, d_in: int, hidden: int, out: int, *, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(d_in, hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, out, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    return self.fc2(jax.nn.gelu(self.fc1(x)))


class AudioEncoder(nnx.Module):
  """Log-mel [B, M, F] (dB) and real frame counts [B] -> joint-space vectors [B, P] (unnormed)."""

  def __init__(self, channels: int, dim: int, floor_db: float, *, rngs: nnx.Rngs):
    self.floor_db = floor_db
    self.stem = nnx.Conv(audio.N_MELS, channels, kernel_size=(3,), padding="SAME", rngs=rngs)
    self.downs = nnx.List([nnx.Conv(channels, channels, kernel_size=(3,), strides=(2,),
                                    padding="SAME", rngs=rngs) for _ in range(STRIDES)])
    self.norms = nnx.List([nnx.LayerNorm(channels, rngs=rngs) for _ in range(STRIDES)])
    self.residuals = nnx.List([nnx.Conv(channels, channels, kernel_size=(3,),
                                        kernel_dilation=(2,), padding="SAME", rngs=rngs)
                               for _ in range(STRIDES)])
    self.score = nnx.Linear(channels, 1, rngs=rngs)
    self.project = Projection(2 * channels, channels, dim, rngs=rngs)

  def __call__(self, mel_BxMxF: Array, frames_B: Array) -> Array:
    if mel_BxMxF.shape[1] != audio.N_MELS:
      raise ValueError(f"the contrastive model reads {audio.N_MELS}-bin log-mels, got "
                       f"{mel_BxMxF.shape[1]} bins")
    x_BxMxF = (tagger_lib.soft_floor(mel_BxMxF, self.floor_db) - self.floor_db) / 30.0
    h_BxTxC = jax.nn.gelu(self.stem(x_BxMxF.transpose(0, 2, 1)))
    for down, norm, residual in zip(self.downs, self.norms, self.residuals):
      h_BxTxC = jax.nn.gelu(norm(down(h_BxTxC)))
      h_BxTxC = h_BxTxC + jax.nn.gelu(residual(h_BxTxC))
    # A reduced frame is real if it starts inside the clip.
    valid_BxT = jnp.arange(h_BxTxC.shape[1])[None, :] * 2 ** STRIDES < frames_B[:, None]
    return self.project(_pool(h_BxTxC, valid_BxT, self.score))


class TextEncoder(nnx.Module):
  """Frozen MiniLM token states [B, L, E] and their mask -> joint-space vectors [B, P]."""

  def __init__(self, text_dim: int, hidden: int, dim: int, *, rngs: nnx.Rngs):
    self.score = nnx.Linear(text_dim, 1, rngs=rngs)
    self.project = Projection(2 * text_dim, hidden, dim, rngs=rngs)

  def __call__(self, tokens_BxLxE: Array, mask_BxL: Array) -> Array:
    return self.project(_pool(tokens_BxLxE.astype(jnp.float32), mask_BxL, self.score))


class Clap(nnx.Module):
  """The two encoders and the learned logit scale."""

  def __init__(self, channels: int, dim: int, text_dim: int, text_hidden: int, floor_db: float,
               *, rngs: nnx.Rngs):
    self.audio = AudioEncoder(channels, dim, floor_db, rngs=rngs)
    self.text = TextEncoder(text_dim, text_hidden, dim, rngs=rngs)
    self.log_scale = nnx.Param(jnp.asarray(np.log(1.0 / 0.07), jnp.float32))

  def embed_audio(self, mel_BxMxF: Array, frames_B: Array) -> Array:
    return _normalize(self.audio(mel_BxMxF, frames_B))

  def embed_text(self, tokens_BxLxE: Array, mask_BxL: Array) -> Array:
    return _normalize(self.text(tokens_BxLxE, mask_BxL))

  def scale(self) -> Array:
    return jnp.exp(jnp.minimum(self.log_scale[...], MAX_LOG_SCALE))


def info_nce(logits_BxB: Array, ids_B: Array) -> tuple[Array, Array]:
  """(symmetric InfoNCE, accuracy) of clip-by-caption logits: each clip against every caption
  and each caption against every clip. Clips of one caption (`ids_B`) are all positives of it:
  the target of a row is spread evenly over its positives, so a repeated caption is never
  pushed away from itself (plain diagonal targets would push it down as a negative)."""
  positive_BxB = (ids_B[:, None] == ids_B[None, :]).astype(jnp.float32)
  target_BxB = positive_BxB / jnp.sum(positive_BxB, axis=1, keepdims=True)
  audio_to_text = -jnp.mean(jnp.sum(target_BxB * jax.nn.log_softmax(logits_BxB, 1), 1))
  text_to_audio = -jnp.mean(jnp.sum(target_BxB * jax.nn.log_softmax(logits_BxB.T, 1), 1))
  hit_B = jnp.take_along_axis(positive_BxB, jnp.argmax(logits_BxB, 1)[:, None], 1)[:, 0]
  return 0.5 * (audio_to_text + text_to_audio), jnp.mean(hit_B)


def loss_fn(model: Clap, batch: Mapping[str, Array]) -> tuple[Array, dict[str, Array]]:
  """`info_nce` of the batch's clips against its captions' texts."""
  a_BxP = model.embed_audio(batch["mel"], batch["frames"])
  t_BxP = model.embed_text(batch["text"], batch["text_mask"])
  loss, accuracy = info_nce(model.scale() * a_BxP @ t_BxP.T, batch["caption_id"])
  return loss, dict(loss=loss, accuracy=accuracy, scale=model.scale())


# ---------------------------------------------------------------------------------------------
# Using a trained model: its export, embeddings of log-mels and of captions.
# ---------------------------------------------------------------------------------------------


def make(settings: Mapping[str, Any], seed: int = 0) -> Clap:
  return Clap(settings["channels"], settings["dim"], settings["text_dim"],
              settings["text_hidden"], settings["floor_db"], rngs=nnx.Rngs(seed))


def load(path: str) -> tuple[Clap, dict[str, Any]]:
  """The exported model at `path` (its folder or files) and its JSON."""
  weights, meta, where = fileio.read_export(path, EXPORT_STEM)
  if meta.get("format") != FORMAT:
    raise ValueError(f"{where}: not an almtok contrastive model (format {meta.get('format')!r})")
  abstract = nnx.eval_shape(lambda: make(meta["model"]))
  return checkpoint.with_flat_params(abstract, st_numpy.load(weights), where), meta


def export(model: Clap, directory: str, meta: Mapping[str, Any]) -> str:
  """<directory>/clap.safetensors + clap.json (`meta` needs `model`: `make`'s settings)."""
  weights = st_numpy.save(checkpoint.flat_params(model), metadata={"format": FORMAT})
  path, _ = fileio.write_export(directory, EXPORT_STEM, weights, dict(meta, format=FORMAT),
                                indent=1)
  return path


@functools.lru_cache(maxsize=4)
def _audio_fn(graphdef):
  return jax.jit(lambda params, mel, frames: nnx.merge(graphdef, params).embed_audio(mel, frames))


@functools.lru_cache(maxsize=4)
def _text_fn(graphdef):
  return jax.jit(lambda params, tokens, mask: nnx.merge(graphdef, params).embed_text(tokens,
                                                                                      mask))


def embed_mels(model: Clap, mels: Sequence[np.ndarray], batch: int = 64) -> np.ndarray:
  """Joint-space vectors [N, P] of log-mels [M, F_i], in batches of one length (no clip's vector
  depends on another's padding)."""
  graphdef, params = nnx.split(model)
  run = _audio_fn(graphdef)
  frames_N = np.asarray([m.shape[1] for m in mels])
  out_NxP = np.zeros((len(mels), model.audio.project.fc2.out_features), np.float32)
  for length in np.unique(frames_N):
    index = np.flatnonzero(frames_N == length)
    for start in range(0, index.size, batch):
      rows = index[start:start + batch]
      mel_BxMxF = np.stack([mels[i] for i in rows]).astype(np.float32)
      out_NxP[rows] = np.asarray(run(params, jnp.asarray(mel_BxMxF), jnp.asarray(frames_N[rows])))
  return out_NxP


class CaptionStates:
  """The frozen MiniLM token states of captions, encoded once each (float16 in memory)."""

  def __init__(self, max_len: int):
    from almtok.text import minilm  # pylint: disable=g-import-not-at-top
    self.encoder = minilm.TextEncoder(max_len=max_len)
    self.max_len = max_len

  def __call__(self, texts: Sequence[str], batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(token states [U, L, E] float16, mask [U, L]) of `texts`."""
    tokens, masks = [], []
    for start in range(0, len(texts), batch):
      group = list(texts[start:start + batch])
      padded = group + [""] * (batch - len(group))   # One compiled shape for every call.
      emb = self.encoder.encode(padded)
      tokens.append(np.asarray(emb.tokens_BxNxE[:len(group)], np.float16))
      masks.append(np.asarray(emb.mask_BxN[:len(group)]))
    return np.concatenate(tokens), np.concatenate(masks)


def embed_states(model: Clap, tokens_UxLxE: np.ndarray, mask_UxL: np.ndarray,
                 batch: int = 128) -> np.ndarray:
  """Joint-space vectors [U, P] of caption token states (padded to `batch` rows: one compiled
  shape; a caption's vector never depends on the others')."""
  graphdef, params = nnx.split(model)
  run = _text_fn(graphdef)
  out = []
  for start in range(0, len(mask_UxL), batch):
    t, m = tokens_UxLxE[start:start + batch], mask_UxL[start:start + batch]
    pad = batch - len(m)
    t = np.pad(t.astype(np.float32), ((0, pad), (0, 0), (0, 0)))
    m = np.pad(m, ((0, pad), (0, 0)))
    out.append(np.asarray(run(params, jnp.asarray(t), jnp.asarray(m)))[:batch - pad])
  return np.concatenate(out)


def embed_captions(model: Clap, meta: Mapping[str, Any], texts: Sequence[str],
                   states: CaptionStates | None = None) -> np.ndarray:
  """Joint-space vectors [U, P] of caption texts (MiniLM loaded here unless `states`)."""
  states = states or CaptionStates(meta["text_max_len"])
  return embed_states(model, *states(texts))


def ranks(cosine_NxU: np.ndarray) -> np.ndarray:
  """[N, U]: how many captions score strictly higher with clip n than caption u (0: first; a
  caption tied with others, as a repeated text is, takes the best of their places)."""
  order_NxU = np.sort(cosine_NxU, axis=1)
  u = cosine_NxU.shape[1]
  return u - np.stack([np.searchsorted(row, c, side="right")
                       for row, c in zip(order_NxU, cosine_NxU)])
