"""almtok's own audio tagger: a small CNN over 64-bin log-mel that gives an embedding and the
posteriors of the labels synth_sounds and debian_sounds store with every clip.

No pretrained audio classifier (VGGish, PANNs, PaSST, CLAP) can be downloaded here, so the
metrics that need one use this tagger and say so in their names (`fd_tagger`, `kl_tagger`, ...).

Clip-level targets. A synth_sounds clip holds 1-3 events; its labels say each event's
attributes (`synth_scenes`). The tagger's heads are defined on the whole clip:

  kinds       multi-label  which event kinds are present (tone, chord, arpeggio, chirp, noise,
                           clicks, drums), background event included
  registers   multi-label  which registers (low, mid, high) some event is in (tones, chords,
                           arpeggios)
  directions  multi-label  which directions (rising, falling) some chirp or arpeggio takes
  colors      multi-label  which noise colours (white, pink, brown) some noise event has
  tempos      multi-label  which tempo classes (slow, medium, fast) some pulsed event has
  envelopes   multi-label  which envelopes (fade_in, fade_out, staccato, sustained) occur
  num_events  single       1, 2 or 3 events
  first_kind  single       the kind of the earliest event
  category    single       a debian_sounds clip's category (`debian_captions.CATEGORIES`)

The synth heads have no target on debian_sounds clips and `category` none on synth clips; each
head's loss averages over the clips that have its target. A caption's attributes are the same
(attribute, value) pairs, so adherence asks, per pair, whether the tagger finds it present.

Model: four conv blocks (3x3 conv, GroupNorm, GELU, max-pool halving frequency in the first two
and time in the first three) over the log-mel scaled as (dB + 50) / 30; each remaining frame's
16 bands x channels mapped to `width` features (so that where in frequency the energy is
survives), two residual dilated temporal convolutions, mean- and max-pooling over time (any
duration), a linear map to the `embed_dim` embedding (pre-logits, the Fréchet embedding) and one
linear head per target.

Shape letters: B clips, M mel bins, F frames, H feature height, W feature width, C channels,
D frame features (`width`), E embedding width, K classes of a head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax import nnx
from safetensors import numpy as st_numpy

from almtok import audio
from almtok import checkpoint
from almtok import fileio
from almtok import tokenizers
from almtok.datasets import debian_captions
from almtok.datasets import synth_scenes

Array = jax.Array

FLOOR_DB = -100.0   # Padding value of a log-mel (audio.log_mel's floor).


def soft_floor(mel_db, floor_db: float):
  """10 log10(10^(dB / 10) + 10^(floor / 10)): the power sum of the log-mel and a constant
  level, numpy or jax as the input. Smooth (a hard max would make the gradient and the
  embedding jump at the floor); equal to the input well above the floor, to the floor well
  below it."""
  xp = jnp if isinstance(mel_db, jax.Array) else np
  scale = np.log(10.0) / 10.0
  return xp.logaddexp(mel_db * scale, floor_db * scale) / scale
FREQ_POOLS, TIME_POOLS = 2, 3   # Conv blocks that halve frequency, and time.


@dataclasses.dataclass(frozen=True)
class Head:
  name: str
  kind: str                # "multi" (independent sigmoids) or "single" (softmax)
  classes: tuple[str, ...]


HEADS = (
    Head("kinds", "multi", synth_scenes.KINDS),
    Head("registers", "multi", tuple(synth_scenes.REGISTERS)),
    Head("directions", "multi", synth_scenes.DIRECTIONS),
    Head("colors", "multi", synth_scenes.COLORS),
    Head("tempos", "multi", tuple(synth_scenes.TEMPOS)),
    Head("envelopes", "multi", synth_scenes.ENVELOPES),
    Head("num_events", "single", ("1", "2", "3")),
    Head("first_kind", "single", synth_scenes.KINDS),
    Head("category", "single", debian_captions.CATEGORIES),
)
HEAD_BY_NAME = {h.name: h for h in HEADS}
SYNTH_HEADS = tuple(h.name for h in HEADS if h.name != "category")
# Multi-label head -> the event key whose values it collects.
_EVENT_KEY = {"kinds": "kind", "registers": "register", "directions": "direction",
              "colors": "color", "tempos": "tempo", "envelopes": "envelope"}


# ---------------------------------------------------------------------------------------------
# Targets.
# ---------------------------------------------------------------------------------------------


def attributes(labels: Mapping[str, Any]) -> set[tuple[str, str]]:
  """The (multi-label head, class) pairs a synth_sounds clip's labels say are present (none for
  a clip of another dataset)."""
  pairs = set()
  for event in labels.get("events", ()):
    for head, key in _EVENT_KEY.items():
      if event.get(key) is not None:
        pairs.add((head, str(event[key])))
  return pairs


def targets(labels_json: str | Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Per head, the clip's target: a 0/1 vector (multi-label), a class index (single), or no
  entry when the clip has no target for that head. Synth clips are told apart from debian
  clips by their labels (`events` against `category`)."""
  labels = json.loads(labels_json) if isinstance(labels_json, str) else labels_json
  out = {}
  if "events" in labels:
    present = attributes(labels)
    for head in HEADS:
      if head.kind == "multi":
        out[head.name] = np.asarray([(head.name, c) in present for c in head.classes],
                                    np.float32)
    events = sorted(labels["events"], key=lambda e: e["start_s"])
    out["num_events"] = np.int32(min(len(events), 3) - 1)
    out["first_kind"] = np.int32(synth_scenes.KINDS.index(events[0]["kind"]))
  elif labels.get("category") in debian_captions.CATEGORIES:
    out["category"] = np.int32(debian_captions.CATEGORIES.index(labels["category"]))
  return out


def stack_targets(per_clip: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Batch targets: per head `<name>` [B, K] or [B] and `<name>_mask` [B] (has a target)."""
  out = {}
  for head in HEADS:
    shape = (len(head.classes),) if head.kind == "multi" else ()
    dtype = np.float32 if head.kind == "multi" else np.int32
    out[head.name] = np.stack([np.asarray(t.get(head.name, np.zeros(shape, dtype)), dtype)
                               for t in per_clip])
    out[f"{head.name}_mask"] = np.asarray([head.name in t for t in per_clip], np.float32)
  return out


# ---------------------------------------------------------------------------------------------
# Model.
# ---------------------------------------------------------------------------------------------


class Tagger(nnx.Module):
  """Log-mel [B, M, F] (dB) -> (embedding [B, E], logits per head)."""

  def __init__(self, channels: Sequence[int] = (16, 32, 64, 128), embed_dim: int = 64,
               num_groups: int = 8, width: int = 128, floor_db: float | None = None, *,
               rngs: nnx.Rngs):
    """`floor_db`: the level (dB) the input adds to every mel bin (`soft_floor`), so that sounds
    far below it (a faint hiss under digital silence) barely move the input, as they barely
    change what one hears; None: the log-mel as it is (floored at -100 dB)."""
    self.channels, self.embed_dim, self.floor_db = tuple(channels), embed_dim, floor_db
    conv = dict(kernel_size=(3, 3), padding="SAME",
                kernel_init=nnx.initializers.he_normal(), rngs=rngs)
    c_in = 1
    self.convs, self.norms = nnx.List(), nnx.List()
    for c in self.channels:
      self.convs.append(nnx.Conv(c_in, c, **conv))
      self.norms.append(nnx.GroupNorm(c, num_groups=min(num_groups, c), rngs=rngs))
      c_in = c
    bands = 64 // 2 ** min(len(self.channels), FREQ_POOLS)   # Mel bins left after pooling.
    # Each frame keeps where in frequency its energy is (register, colour): bands x channels.
    self.frame = nnx.Linear(max(bands, 1) * c_in, width, rngs=rngs)
    # Temporal convolutions over the frame sequence (pulse rates, envelopes).
    self.temporal = nnx.List([nnx.Conv(width, width, kernel_size=(5,), kernel_dilation=(d,),
                                       padding="SAME", rngs=rngs) for d in (1, 2)])
    self.embed = nnx.Linear(2 * width, embed_dim, rngs=rngs)
    self.heads = nnx.Dict({h.name: nnx.Linear(embed_dim, len(h.classes), rngs=rngs)
                           for h in HEADS})

  def __call__(self, mel_BxMxF: Array, frames_B: Array | None = None
               ) -> tuple[Array, dict[str, Array]]:
    """`frames_B`: each clip's real frames (the rest is padding, left out of the pooling)."""
    if mel_BxMxF.shape[1] != 64:
      raise ValueError(f"the tagger reads 64-bin log-mels, got {mel_BxMxF.shape[1]} bins")
    if self.floor_db is not None:
      mel_BxMxF = soft_floor(mel_BxMxF, self.floor_db)
    x = ((mel_BxMxF + 50.0) / 30.0)[..., None]   # B x H=M x W=F x 1
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = jax.nn.gelu(norm(conv(x)))
      # Frequency keeps 16 bands (simultaneous notes of a chord stay apart), time a grid of
      # 80 ms (pulses, envelopes).
      x = _max_pool(x, 2 if i < FREQ_POOLS else 1, 2 if i < TIME_POOLS else 1)
    b, h, w, c = x.shape
    h_BxWxD = jax.nn.gelu(self.frame(x.transpose(0, 2, 1, 3).reshape(b, w, h * c)))
    for conv in self.temporal:
      h_BxWxD = h_BxWxD + jax.nn.gelu(conv(h_BxWxD))
    if frames_B is None:
      valid_BxW = jnp.ones(h_BxWxD.shape[:2], bool)
    else:   # A pooled frame is real if it starts inside the clip.
      valid_BxW = jnp.arange(w)[None, :] * 2 ** TIME_POOLS < frames_B[:, None]
    weight_BxWx1 = valid_BxW[:, :, None].astype(h_BxWxD.dtype)
    mean_BxD = jnp.sum(h_BxWxD * weight_BxWx1, 1) / jnp.maximum(jnp.sum(weight_BxWx1, 1), 1.0)
    max_BxD = jnp.max(jnp.where(valid_BxW[:, :, None], h_BxWxD, -1e9), axis=1)
    emb_BxE = self.embed(jnp.concatenate([mean_BxD, max_BxD], axis=-1))
    hidden_BxE = jax.nn.gelu(emb_BxE)
    return emb_BxE, {name: head(hidden_BxE) for name, head in self.heads.items()}


def _max_pool(x_BxHxWxC: Array, fh: int, fw: int) -> Array:
  """Max over non-overlapping fh x fw windows, the edge padded as "SAME" pooling pads it.

  A reshape and a max, not `nnx.max_pool`: the same values, and its gradient costs XLA on CPU
  far less than reduce_window's (the whole train step is about 1.5x faster)."""
  if fh == fw == 1:
    return x_BxHxWxC
  b, h, w, c = x_BxHxWxC.shape
  pad = ((0, 0), (0, -h % fh), (0, -w % fw), (0, 0))
  x = jnp.pad(x_BxHxWxC, pad, constant_values=-jnp.inf)
  return x.reshape(b, x.shape[1] // fh, fh, x.shape[2] // fw, fw, c).max(axis=(2, 4))


def posteriors(logits: Mapping[str, Array]) -> dict[str, Array]:
  """Sigmoid (multi-label) or softmax (single) probabilities per head, float32."""
  return {name: (jax.nn.sigmoid(v) if HEAD_BY_NAME[name].kind == "multi"
                 else jax.nn.softmax(v, axis=-1)).astype(jnp.float32)
          for name, v in logits.items()}


def loss_fn(model: Tagger, mel_BxMxF: Array, frames_B: Array, batch: Mapping[str, Array]
            ) -> tuple[Array, dict[str, Array]]:
  """Sum over heads of each head's mean loss over the clips that have its target (binary
  cross-entropy per class for multi-label heads, softmax cross-entropy otherwise)."""
  _, logits = model(mel_BxMxF, frames_B)
  total, metrics = 0.0, {}
  for head in HEADS:
    z, mask_B = logits[head.name].astype(jnp.float32), batch[f"{head.name}_mask"]
    if head.kind == "multi":
      per_B = jnp.mean(optax.sigmoid_binary_cross_entropy(z, batch[head.name]), axis=-1)
    else:
      per_B = -jnp.take_along_axis(jax.nn.log_softmax(z), batch[head.name][:, None], 1)[:, 0]
    loss = jnp.sum(per_B * mask_B) / jnp.maximum(jnp.sum(mask_B), 1.0)
    metrics[f"loss_{head.name}"] = loss
    total = total + loss
  metrics["loss"] = total
  return total, metrics


# ---------------------------------------------------------------------------------------------
# Using a trained tagger: loading its export, predicting, resynthesised references.
# ---------------------------------------------------------------------------------------------

EXPORT_STEM = "tagger"
FORMAT = "almtok-tagger-1"


def load(path: str) -> tuple[Tagger, dict[str, Any]]:
  """The exported tagger at `path` (its folder or files) and its JSON."""
  weights, meta, where = fileio.read_export(path, EXPORT_STEM)
  if meta.get("format") != FORMAT:
    raise ValueError(f"{where}: not an almtok tagger (format {meta.get('format')!r})")
  m = meta["model"]
  abstract = nnx.eval_shape(lambda: Tagger(tuple(m["channels"]), m["embed_dim"],
                                           m["num_groups"], m["width"], m.get("floor_db"),
                                           rngs=nnx.Rngs(0)))
  return checkpoint.with_flat_params(abstract, st_numpy.load(weights), where), meta


def predict(model: Tagger, mel_NxMxF: np.ndarray, frames_N: np.ndarray,
            batch: int = 64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """(embeddings [N, E], posteriors per head) of log-mels, in batches of clips of one length,
  each cut to that length: a clip's result never depends on the padding other clips need
  (GroupNorm's statistics would include it)."""
  graphdef, params = nnx.split(model)
  run = _predict_fn(graphdef)
  n = len(frames_N)
  embs, posts = [None] * n, [None] * n
  for length in np.unique(frames_N):
    index = np.flatnonzero(frames_N == length)
    for start in range(0, index.size, batch):
      rows = index[start:start + batch]
      e, p = run(params, jnp.asarray(mel_NxMxF[rows, :, :length]),
                 jnp.asarray(frames_N[rows]))
      e, p = np.asarray(e), jax.tree.map(np.asarray, p)
      for j, i in enumerate(rows):
        embs[i] = e[j]
        posts[i] = {k: v[j] for k, v in p.items()}
  return np.stack(embs), {k: np.stack([p[k] for p in posts]) for k in posts[0]}


@functools.lru_cache(maxsize=4)
def _predict_fn(graphdef):

  @jax.jit
  def run(params, mel, frames):
    emb, logits = nnx.merge(graphdef, params)(mel, frames)
    return emb, posteriors(logits)

  return run


def resynthesise(wavs: Sequence[np.ndarray], tok: tokenizers.AudioTokenizer, cache: str,
                 tokenizer_key: str, batch: int = 16) -> list[np.ndarray]:
  """Log-mels of `wavs` after tok.encode and tok.decode (the tokenizer's vocoder), computed
  once and cached in `cache` (.npz of the padded mels, their frame counts, and a hash of the
  waveforms and of `tokenizer_key`, which says what the tokenizer is: other clips or another
  tokenizer recompute it)."""
  digest = hashlib.sha256(tokenizer_key.encode())
  for w in wavs:
    digest.update(np.ascontiguousarray(w, np.float32).tobytes())
  key = digest.hexdigest()
  if os.path.exists(cache):
    with np.load(cache, allow_pickle=False) as f:
      if "key" in f and str(f["key"]) == key:
        return [m[:, :t] for m, t in zip(f["mel"], f["frames"])]
  encode = jax.jit(tok.encode)
  mels = []
  for start in tqdm.trange(0, len(wavs), batch, desc=f"resynth {os.path.basename(cache)}",
                           unit="batch", disable=None):
    group = wavs[start:start + batch]
    length = max(w.size for w in group)
    wav_BxS = np.zeros((len(group), length), np.float32)
    for b, w in enumerate(group):
      wav_BxS[b, :w.size] = w
    back_BxS = np.asarray(tok.decode(np.asarray(encode(wav_BxS))))
    mels += [audio.log_mel(back_BxS[b, :w.size]) for b, w in enumerate(group)]
  frames = max(m.shape[1] for m in mels)
  padded = np.full((len(mels), audio.N_MELS, frames), FLOOR_DB, np.float32)
  for i, m in enumerate(mels):
    padded[i, :, :m.shape[1]] = m
  with fileio.atomic_path(cache) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, mel=padded, frames=np.asarray([m.shape[1] for m in mels], np.int32),
               key=np.asarray(key))
  return mels
