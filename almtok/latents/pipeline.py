"""The Grain input pipeline over prepared latents (see `almtok/latents/store.py`).

`make_dataset` reads one split's ArrayRecord shards and yields batches:

  x_BxLxC        float32  latents normalized with stats.json (train mean and std), zero padded
  mask_BxL       bool     True at real tokens
  text_ids_BxN   int32    MiniLM word pieces of the caption (`tokenize_captions`)
  text_mask_BxN  bool     True at real word pieces
  caption        str (B,) the caption itself (`keep_captions`)
  id             str (B,) the clip id ("" in padding rows)
  valid_B        bool     False in rows that only pad a finite split to whole batches

Order of operations: each JAX process takes its own records (`records[index::count]`), which
are shuffled (a new order per epoch, from `seed`), repeated, decoded and normalized, cropped to
L tokens at a random start or padded to L (the crop start depends only on `seed` and the
element's position in the stream, so that a restored iterator continues identically), captioned
and batched. Batching happens before the iterator (and before worker processes), so the batches
are the same whatever `worker_count` is. The iterator that `iter(make_dataset(...))` returns has
`get_state()` / `set_state()`, which checkpoints store.

Worker processes (`worker_count` > 0) are spawned: they import the main module again, so a script
must keep its work under `if __name__ == "__main__"` (absl's `app.run` does), and they expect absl
flags to be parsed. They pay off only when decoding and tokenising outgrow the main process: on
a 2-core CPU, two workers gave fewer batches per second than threads did.

Shape letters: B batch, L tokens per example (`seq_len`), C latent channels, N caption word
pieces (`text_max_len`), T tokens of one clip.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import grain
import numpy as np

from almtok.latents import store as latents
from almtok.text.tokenizer import MiniLMTokenizer


class ProcessShard:
  """A random-access view of one process's records: `source[index::count]`.

  With `length` larger than the slice, the tail reads as empty records (padding rows).
  """

  def __init__(self, source: Any, index: int, count: int, length: int):
    self._source, self._index, self._count, self._length = source, index, count, length

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, i: int) -> bytes:
    if not 0 <= i < self._length:
      raise IndexError(f"index {i} out of range for {self._length} records")
    j = self._index + i * self._count
    return self._source[j] if j < len(self._source) else b""


class DecodeAndNormalize(grain.transforms.Map):
  """Serialised record -> {"x_TxC" normalized float32, "id", "caption", "valid"}."""

  def __init__(self, stats: latents.Stats, normalize: bool):
    self._stats = stats
    self._channels = stats.latent_dim
    self._normalize = normalize

  def map(self, element: bytes) -> dict[str, Any]:
    if not element:  # Padding row of a finite split.
      return {"x_TxC": np.zeros((0, self._channels), np.float32), "id": "", "caption": "",
              "valid": False}
    record = latents.decode_record(element)
    x_TxC = record.latents.astype(np.float32)
    if self._normalize:
      x_TxC = latents.normalize(x_TxC, self._stats)
    return {"x_TxC": x_TxC, "id": record.id, "caption": record.caption, "valid": True}


def crop_or_pad(element: dict[str, Any], seq_len: int, start: int) -> dict[str, Any]:
  """Cuts x_TxC to `seq_len` tokens from `start`, or zero pads it; adds mask_L."""
  x_TxC = element.pop("x_TxC")
  t = x_TxC.shape[0]
  x_LxC = np.zeros((seq_len, x_TxC.shape[1]), np.float32)
  kept = x_TxC[start:start + seq_len]
  x_LxC[:kept.shape[0]] = kept
  mask_L = np.zeros((seq_len,), bool)
  mask_L[:kept.shape[0]] = True
  element.update(x_LxC=x_LxC, mask_L=mask_L, num_tokens=np.int32(t))
  return element


class RandomCrop(grain.transforms.RandomMap):
  """A random window of `seq_len` tokens of clips that are longer (uniform start)."""

  def __init__(self, seq_len: int):
    self._seq_len = seq_len

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    extra = element["x_TxC"].shape[0] - self._seq_len
    start = int(rng.integers(0, extra + 1)) if extra > 0 else 0
    return crop_or_pad(element, self._seq_len, start)


class FirstWindow(grain.transforms.Map):
  """The first `seq_len` tokens (evaluation: no randomness)."""

  def __init__(self, seq_len: int):
    self._seq_len = seq_len

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    return crop_or_pad(element, self._seq_len, 0)


class TokenizeCaption(grain.transforms.Map):
  """Adds the caption's MiniLM word pieces (text_ids_N, text_mask_N)."""

  def __init__(self, max_len: int):
    self._tokenizer = MiniLMTokenizer(max_len)

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    ids_1xN, mask_1xN = self._tokenizer([element["caption"]])
    if not element["valid"]:
      mask_1xN[:] = False
    element.update(text_ids_N=ids_1xN[0], text_mask_N=mask_1xN[0])
    return element


_BATCH_NAMES = {"x_LxC": "x_BxLxC", "mask_L": "mask_BxL", "text_ids_N": "text_ids_BxN",
                "text_mask_N": "text_mask_BxN", "valid": "valid_B", "num_tokens": "num_tokens_B"}


class Collate:
  """Stacks examples into a batch dict with shape-named keys; strings become str arrays."""

  def __init__(self, keep_captions: bool):
    self._keep_captions = keep_captions

  def __call__(self, elements: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    batch = {name: np.stack([e[key] for e in elements])
             for key, name in _BATCH_NAMES.items() if key in elements[0]}
    batch["id"] = np.asarray([e["id"] for e in elements], dtype=str)
    if self._keep_captions:
      batch["caption"] = np.asarray([e["caption"] for e in elements], dtype=str)
    return batch


def make_dataset(latents_dir: str, split: str, *, seq_len: int, batch_size: int, seed: int = 0,
                 shuffle: bool = True, repeat: bool = True, random_crop: bool | None = None,
                 drop_remainder: bool | None = None, text_max_len: int = 32,
                 tokenize_captions: bool = True, keep_captions: bool = False,
                 normalize: bool = True, worker_count: int = 0, worker_buffer_size: int = 2,
                 read_threads: int = 4, process_index: int | None = None,
                 process_count: int | None = None) -> grain.IterDataset:
  """Batches of one split of prepared latents (keys in the module docstring).

  Args:
    latents_dir: <workdir>/latents of `almtok.prepare`.
    split: "train", "validation", ...
    seq_len: L, tokens per example.
    batch_size: B, examples per batch on this process.
    seed: shuffling and crops; the same seed gives the same stream.
    shuffle: a new order each epoch.
    repeat: endless epochs (training); otherwise one pass.
    random_crop: random windows of long clips (default: `repeat`); else their first L tokens.
    drop_remainder: drop a last partial batch (default: `repeat`). Without it a finite split is
      padded with rows where `valid_B` is False to a whole number of batches, and every process
      yields the same number of batches.
    text_max_len: N for caption word pieces.
    tokenize_captions: add text_ids_BxN and text_mask_BxN.
    keep_captions: add the caption strings.
    normalize: subtract the train mean and divide by the train std (stats.json).
    worker_count: processes that prepare batches (0: threads of this process).
    worker_buffer_size: batches each worker keeps ready.
    read_threads: threads reading and decoding when `worker_count` is 0.
    process_index, process_count: this process's slice of the data; default JAX's.
  """
  if seq_len < 1 or batch_size < 1:
    raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len}, {batch_size}")
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index, process_count = jax.process_index(), jax.process_count()
  random_crop = repeat if random_crop is None else random_crop
  drop_remainder = repeat if drop_remainder is None else drop_remainder
  stats = latents.read_stats(latents_dir)
  paths = latents.shard_paths(latents_dir, split, stats)
  if not paths:
    raise ValueError(f"split {split!r} of {latents_dir} has no records")
  source = grain.sources.ArrayRecordDataSource(paths)
  total = len(source)
  if drop_remainder:
    # Equal shares; the few records past the last whole share are never read.
    length = total // process_count
  else:
    length = math.ceil(math.ceil(total / process_count) / batch_size) * batch_size
  if length < 1:
    raise ValueError(f"split {split!r} has {total} records, fewer than {process_count} "
                     "processes")
  ds = grain.MapDataset.source(ProcessShard(source, process_index, process_count, length))
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if repeat:
    ds = ds.repeat(None)
  ds = ds.map(DecodeAndNormalize(stats, normalize))
  if random_crop:
    # Seeded apart from the shuffle; grain seeds each element's generator with the seed and
    # the element's index, so crops do not depend on how far an iterator has run.
    ds = ds.random_map(RandomCrop(seq_len), seed=(seed + 1) % 2**32)
  else:
    ds = ds.map(FirstWindow(seq_len))
  if tokenize_captions:
    ds = ds.map(TokenizeCaption(text_max_len))
  ds = ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=Collate(keep_captions))
  if worker_count > 0:
    return ds.to_iter_dataset().mp_prefetch(grain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=worker_buffer_size))
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                              prefetch_buffer_size=max(2 * batch_size, 16)))



