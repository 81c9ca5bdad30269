"""The Grain pipeline over prepared latents: batches, crops, epochs, shards and checkpoints."""

import collections
import json

import jax.numpy as jnp
import numpy as np
import pytest

from almtok import audio
from almtok import prepare
from almtok.latents import store as latents
from almtok.latents import pipeline
from almtok.text.tokenizer import MiniLMTokenizer
from configs import prepare as prepare_config

SR = audio.SAMPLE_RATE
C = 8
NUM_TRAIN, NUM_VALIDATION = 24, 7
L = 20


class PieceEnergy:
  """A weight-free tokenizer: per 40 ms token, log energy and mean of 4 consecutive pieces."""
  sample_rate = SR
  frame_rate = 25.0
  latent_dim = C
  hop = 640

  def encode(self, wav_BxS):
    b, s = wav_BxS.shape
    t = s // self.hop
    pieces_BxTx4xP = wav_BxS[:, :t * self.hop].reshape(b, t, 4, -1)
    energy_BxTx4 = jnp.log(jnp.mean(jnp.square(pieces_BxTx4xP), axis=-1) + 1e-6)
    return jnp.concatenate([energy_BxTx4, 10.0 * jnp.mean(pieces_BxTx4xP, axis=-1)], axis=-1)

  def decode(self, x_BxTxC):
    raise NotImplementedError


@pytest.fixture(scope="module")
def latents_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("clips")
  rng = np.random.default_rng(0)
  rows = {"train": [], "val": []}
  for split, n in (("train", NUM_TRAIN), ("val", NUM_VALIDATION)):
    for i in range(n):
      clip_id = f"{split}{i:02d}"
      seconds = rng.uniform(0.3, 2.0)  # 7 to 50 tokens: some longer than L, some shorter.
      wav = rng.uniform(-1, 1, int(seconds * SR)) * rng.uniform(0.05, 0.8)
      audio.write(root / "audio" / f"{clip_id}.wav", wav.astype(np.float32))
      rows[split].append(f"{clip_id},yt{clip_id},0,sound {i} of the {split} set")
  for split, lines in rows.items():
    (root / f"{split}.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n" + "\n".join(lines) + "\n")
  config = prepare_config.get_config(f"audiocaps,audio_dir={root / 'audio'},csv_dir={root}")
  with config.unlocked():
    config.tokenizer.name = "piece_energy"
    config.prepare.update(batch_size=8, inputs_per_shard=5, latent_dtype="float32")
  workdir = str(tmp_path_factory.mktemp("work"))
  done = prepare.prepare(config, workdir, tokenizer=PieceEnergy())
  assert done.stats.splits["train"].records == NUM_TRAIN
  return done.latents_dir


@pytest.fixture(scope="module")
def stored(latents_dir):
  """id -> stored (unnormalized) latents T x C, and id -> caption."""
  out, captions = {}, {}
  for split in ("train", "validation"):
    for path in latents.shard_paths(latents_dir, split):
      for r in latents.read_shard(path):
        out[r.id] = r.latents
        captions[r.id] = r.caption
  return out, captions


def _make(latents_dir, split="train", **kwargs):
  args = dict(seq_len=L, batch_size=4, seed=0, process_index=0, process_count=1)
  args.update(kwargs)
  return pipeline.make_dataset(latents_dir, split, **args)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert sorted(a) == sorted(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batches_have_the_promised_keys_shapes_and_masks(latents_dir, stored):
  stored_latents, captions = stored
  batch = next(iter(_make(latents_dir, keep_captions=True, text_max_len=12)))
  assert batch["x_BxLxC"].shape == (4, L, C) and batch["x_BxLxC"].dtype == np.float32
  assert batch["mask_BxL"].shape == (4, L) and batch["mask_BxL"].dtype == bool
  assert batch["text_ids_BxN"].shape == (4, 12) and batch["text_ids_BxN"].dtype == np.int32
  assert batch["text_mask_BxN"].dtype == bool and batch["valid_B"].all()
  tokenizer = MiniLMTokenizer(12)
  for b, clip_id in enumerate(batch["id"]):
    t = stored_latents[clip_id].shape[0]
    assert batch["num_tokens_B"][b] == t
    np.testing.assert_array_equal(batch["mask_BxL"][b], np.arange(L) < min(t, L))
    assert not batch["x_BxLxC"][b][~batch["mask_BxL"][b]].any()  # Zero padding.
    assert batch["caption"][b] == captions[clip_id]
    ids_1xN, mask_1xN = tokenizer([captions[clip_id]])
    np.testing.assert_array_equal(batch["text_ids_BxN"][b], ids_1xN[0])
    np.testing.assert_array_equal(batch["text_mask_BxN"][b], mask_1xN[0])


def test_crops_are_windows_of_the_stored_latents(latents_dir, stored):
  stored_latents, _ = stored
  starts = collections.Counter()
  for batch in _take(iter(_make(latents_dir, normalize=False)), 12):
    for b, clip_id in enumerate(batch["id"]):
      x_TxC = stored_latents[clip_id]
      n = int(batch["mask_BxL"][b].sum())
      matches = [s for s in range(max(1, x_TxC.shape[0] - L + 1))
                 if np.array_equal(batch["x_BxLxC"][b, :n], x_TxC[s:s + n])]
      assert len(matches) == 1 and n == min(L, x_TxC.shape[0])
      if x_TxC.shape[0] > L:
        starts[matches[0] > 0] += 1
  assert starts[True] > 0  # Long clips are not always cut at their start.


def test_normalized_with_train_stats_and_denormalize_inverts(latents_dir, stored):
  stored_latents, _ = stored
  stats = latents.read_stats(latents_dir)
  ds = _make(latents_dir, seq_len=64, shuffle=False, repeat=False, batch_size=6)
  batches = list(ds)
  assert len(batches) == NUM_TRAIN // 6
  x_NxC = np.concatenate([b["x_BxLxC"][b["mask_BxL"]] for b in batches]).astype(np.float64)
  assert x_NxC.shape[0] == sum(v.shape[0] for k, v in stored_latents.items()
                               if k.startswith("train"))
  np.testing.assert_allclose(x_NxC.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(x_NxC.std(0), 1.0, atol=1e-5)
  batch = batches[0]
  for x_BxLxC in (batch["x_BxLxC"], jnp.asarray(batch["x_BxLxC"])):  # numpy and JAX arrays.
    raw_BxLxC = np.asarray(latents.denormalize(x_BxLxC, stats))
    for b, clip_id in enumerate(batch["id"]):
      t = stored_latents[clip_id].shape[0]
      np.testing.assert_allclose(raw_BxLxC[b, :t], stored_latents[clip_id], rtol=1e-5,
                                 atol=1e-5)
  np.testing.assert_allclose(latents.denormalize(np.zeros((2, C)), stats),
                             np.broadcast_to(stats.mean_C, (2, C)), rtol=1e-6)


def test_epochs_see_every_record_once_in_a_new_order_and_seeds_reproduce(latents_dir):
  it = iter(_make(latents_dir, batch_size=4))
  per_epoch = NUM_TRAIN // 4
  epochs = [[i for b in _take(it, per_epoch) for i in b["id"]] for _ in range(2)]
  for ids in epochs:
    assert sorted(ids) == [f"train{i:02d}" for i in range(NUM_TRAIN)]
  assert epochs[0] != epochs[1]
  _assert_same(_take(iter(_make(latents_dir, seed=3)), 4),
               _take(iter(_make(latents_dir, seed=3)), 4))
  first = [b["id"].tolist() for b in _take(iter(_make(latents_dir, seed=4)), 4)]
  assert first != [b["id"].tolist() for b in _take(iter(_make(latents_dir, seed=3)), 4)]


def test_restored_iterator_continues_identically(latents_dir):
  it = iter(_make(latents_dir, batch_size=5))  # Crosses an epoch boundary (24 / 5).
  _take(it, 3)
  state = it.get_state()
  json.dumps(state)  # Checkpointable as JSON.
  expected = _take(it, 5)
  restored = iter(_make(latents_dir, batch_size=5))
  restored.set_state(state)
  _assert_same(_take(restored, 5), expected)


def test_processes_get_disjoint_shares_and_finite_splits_pad_to_whole_batches(latents_dir):
  # Training: equal, disjoint shares per process.
  shares = []
  for p in range(3):
    it = iter(_make(latents_dir, batch_size=4, process_index=p, process_count=3))
    shares.append({i for b in _take(it, 2) for i in b["id"]})
  assert all(len(s) == NUM_TRAIN // 3 for s in shares)
  assert len(set.union(*shares)) == NUM_TRAIN
  # Evaluation: every record exactly once, the same number of batches on every process.
  seen, counts = [], set()
  for p in range(2):
    batches = list(_make(latents_dir, "validation", batch_size=2, shuffle=False, repeat=False,
                         process_index=p, process_count=2))
    counts.add(len(batches))
    for b in batches:
      assert b["x_BxLxC"].shape == (2, L, C)
      seen += [i for i, v in zip(b["id"], b["valid_B"]) if v]
      assert not b["mask_BxL"][~b["valid_B"]].any()
      assert not b["text_mask_BxN"][~b["valid_B"]].any()
  assert counts == {2}  # ceil(ceil(7 / 2) / 2) batches each.
  assert sorted(seen) == [f"val{i:02d}" for i in range(NUM_VALIDATION)]


def test_worker_processes_give_the_same_batches(latents_dir):
  expected = _take(iter(_make(latents_dir)), 3)
  it = iter(_make(latents_dir, worker_count=2))
  try:
    _assert_same(_take(it, 3), expected)
  finally:
    it.close()
