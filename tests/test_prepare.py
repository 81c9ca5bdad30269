"""Latent preparation: broken inputs, bucketed encoding, resuming, and the end-to-end synth set."""

import collections
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from almtok import audio
from almtok import configlib
from almtok import prepare
from almtok.latents import store as latents
from configs import prepare as prepare_config

SR = audio.SAMPLE_RATE
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FrameRms:
  """A weight-free tokenizer: per 40 ms token, the log energy of 8 consecutive 5 ms pieces."""
  sample_rate = SR
  frame_rate = 25.0
  latent_dim = 8
  hop = 640

  def __init__(self):
    self.traces = 0

  def encode(self, wav_BxS):
    self.traces += 1  # Runs once per compiled shape under jit.
    b, s = wav_BxS.shape
    t = s // self.hop
    pieces_BxTxCxP = wav_BxS[:, :t * self.hop].reshape(b, t, self.latent_dim, -1)
    return jnp.log(jnp.mean(jnp.square(pieces_BxTxCxP), axis=-1) + 1e-6)

  def decode(self, x_BxTxC):
    b, t, c = x_BxTxC.shape
    level_BxTxC = jnp.sqrt(jnp.exp(x_BxTxC))
    return jnp.repeat(level_BxTxC, self.hop // c, axis=-1).reshape(b, t * self.hop)


def _noise(seconds, sr=SR, seed=0, amp=0.3, channels=None):
  rng = np.random.default_rng(seed)
  shape = (int(round(seconds * sr)),) + ((channels,) if channels else ())
  return (amp * rng.uniform(-1, 1, shape)).astype(np.float32)


def _config(audio_dir, csv_dir, **options):
  config = prepare_config.get_config(f"audiocaps,audio_dir={audio_dir},csv_dir={csv_dir}")
  with config.unlocked():
    config.tokenizer.name = "frame_rms"
    config.prepare.update(dict(batch_size=4, inputs_per_shard=3, max_seconds=2.0), **options)
  prepare.check_config(config)
  return config


def _write_csv(path, rows):
  with open(path, "w", encoding="utf-8") as f:
    f.write("audiocap_id,youtube_id,start_time,caption\n")
    for row in rows:
      f.write(",".join(row) + "\n")


# id -> (what the file is, the skip kind expected, or None when a record is expected).
TRAIN = {
    "101": ("good 1.0 s", None), "102": ("good 0.5 s", None), "103": ("good 3.0 s (cut)", None),
    "104": ("stereo 44.1 kHz flac", None), "105": ("8 kHz", None),
    "106": ("named by youtube id", None), "107": ("good 1.3 s", None),
    "201": ("garbage bytes", "unreadable"), "202": ("zero bytes", "unreadable"),
    "203": ("empty wav", "empty"), "204": ("NaN samples", "non-finite"),
    "205": ("silent", "silent"), "206": ("too short", "too short"),
    "207": ("missing file", "missing"),
}
VALIDATION = {"301": ("good 0.8 s", None), "302": ("good 1.1 s", None),
              "101": ("id reused", "duplicate id"), "303": ("no caption", "bad row")}


@pytest.fixture(scope="module")
def broken_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("audiocaps")
  audio_dir = root / "audio"
  os.makedirs(audio_dir / "val")
  audio.write(audio_dir / "101.wav", _noise(1.0, seed=1))
  audio.write(audio_dir / "102.wav", _noise(0.5, seed=2))
  audio.write(audio_dir / "103.wav", _noise(3.0, seed=3))
  sf.write(audio_dir / "104.flac", _noise(1.2, sr=44_100, seed=4, channels=2), 44_100)
  audio.write(audio_dir / "105.wav", _noise(1.0, sr=8000, seed=5), 8000)
  audio.write(audio_dir / "yt106.wav", _noise(0.9, seed=6))
  audio.write(audio_dir / "107.ogg.wav", _noise(0.1, seed=0))  # A stem that matches no id.
  sf.write(audio_dir / "107.ogg", _noise(1.3, seed=7), SR, format="OGG", subtype="VORBIS")
  (audio_dir / "201.wav").write_bytes(np.random.default_rng(0).bytes(4000))
  (audio_dir / "202.wav").write_bytes(b"")
  sf.write(audio_dir / "203.wav", np.zeros(0, np.float32), SR)
  nan = _noise(1.0, seed=8)
  nan[100] = np.nan
  sf.write(audio_dir / "204.wav", nan, SR, subtype="FLOAT")
  audio.write(audio_dir / "205.wav", np.zeros(SR, np.float32))
  audio.write(audio_dir / "206.wav", _noise(0.02, seed=9))
  audio.write(audio_dir / "val" / "301.wav", _noise(0.8, seed=10))
  audio.write(audio_dir / "val" / "302.flac", _noise(1.1, seed=11))
  _write_csv(root / "train.csv", [
      (i, f"yt{i}", "30", f"a sound number {i}, recorded outdoors".replace(",", ""))
      for i in TRAIN])
  _write_csv(root / "val.csv", [(i, f"yt{i}", "0", "" if i == "303" else f"clip {i}")
                                for i in VALIDATION])
  return str(audio_dir), str(root)


@pytest.fixture(scope="module")
def prepared(broken_folder, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("prepared"))
  config = _config(*broken_folder)
  tokenizer = FrameRms()
  stats = prepare.prepare(config, workdir, tokenizer=tokenizer).stats
  return config, workdir, stats, tokenizer


def _records(latents_dir, split):
  return [r for path in latents.shard_paths(latents_dir, split) for r in latents.read_shard(path)]


def _skipped(latents_dir):
  with open(os.path.join(latents_dir, latents.SKIPPED_FILE), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_every_input_is_a_record_or_a_reported_skip(prepared):
  _, workdir, stats, _ = prepared
  latents_dir = os.path.join(workdir, "latents")
  skipped = _skipped(latents_dir)
  for split, expected in (("train", TRAIN), ("validation", VALIDATION)):
    kept = [r.id for r in _records(latents_dir, split)]
    dropped = {s["id"]: s["kind"] for s in skipped if s["split"] == split}
    assert sorted(kept + list(dropped)) == sorted(expected), split
    assert kept == [i for i, (_, kind) in expected.items() if kind is None]  # Input order.
    assert dropped == {i: kind for i, (_, kind) in expected.items() if kind is not None}
    assert stats.splits[split].inputs == len(expected)
  for s in skipped:
    assert s["reason"] and s["source"]
  assert prepare.summary_line(stats) == (
      "processed 9, skipped 9 (missing 1, unreadable 2, empty 1, non-finite 1, too short 1, "
      "silent 1, bad row 1, duplicate id 1)")


def test_records_hold_the_tokenizer_latents_of_each_file(prepared, broken_folder):
  _, workdir, stats, tokenizer = prepared
  audio_dir, _ = broken_folder
  records = {r.id: r for r in _records(os.path.join(workdir, "latents"), "train")}
  files = {"101": "101.wav", "102": "102.wav", "103": "103.wav", "104": "104.flac",
           "105": "105.wav", "106": "yt106.wav", "107": "107.ogg"}
  for clip_id, name in files.items():
    wav_S = audio.load(os.path.join(audio_dir, name))[:2 * SR]  # max_seconds=2.
    record = records[clip_id]
    t = int(wav_S.size / SR * 25 + 1e-6)
    assert record.num_tokens == t and record.duration == pytest.approx(wav_S.size / SR)
    assert record.latents.dtype == np.float16 and record.latents.shape == (t, 8)
    expected_TxC = np.asarray(tokenizer.encode(jnp.asarray(wav_S[None])))[0, :t]
    np.testing.assert_allclose(record.latents.astype(np.float32), expected_TxC, rtol=2e-3,
                               atol=2e-3)
  assert records["104"].duration == pytest.approx(1.2)  # Stereo 44.1 kHz: converted, kept.
  assert records["105"].num_tokens == 25  # 8 kHz: resampled to 1 s at 16 kHz.
  assert json.loads(records["106"].labels) == {"audiocap_id": "106", "youtube_id": "yt106",
                                               "start_time": "30"}
  assert records["101"].caption == "a sound number 101 recorded outdoors"
  assert stats.splits["train"].max_tokens == 50


def test_stats_are_the_train_moments_of_the_stored_latents(prepared):
  _, workdir, stats, _ = prepared
  x_NxC = np.concatenate([r.latents.astype(np.float64)
                          for r in _records(os.path.join(workdir, "latents"), "train")])
  np.testing.assert_allclose(stats.mean_C, x_NxC.mean(0), rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(stats.std_C, x_NxC.std(0), rtol=1e-9, atol=1e-9)
  assert stats.train_tokens == x_NxC.shape[0] == stats.splits["train"].tokens
  assert (stats.frame_rate, stats.latent_dim, stats.tokenizer.name) == (25.0, 8, "frame_rms")
  # Each channel's extremes (the sampler's x0 range), and the same range normalized.
  np.testing.assert_array_equal(stats.min_C, x_NxC.min(0))
  np.testing.assert_array_equal(stats.max_C, x_NxC.max(0))
  lo_C, hi_C = latents.data_range(stats)
  mean_C, std_C = latents.normalizer(stats)
  np.testing.assert_allclose(lo_C, (x_NxC.min(0) - mean_C) / std_C, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(hi_C, (x_NxC.max(0) - mean_C) / std_C, rtol=1e-5, atol=1e-5)
  assert latents.data_range(stats.replace(min_C=None, max_C=None)) is None
  # The typed reader reads back what the writer wrote, and the JSON round-trips.
  on_disk = latents.read_stats(os.path.join(workdir, "latents"))
  assert on_disk.to_json() == stats.to_json()
  assert latents.Stats.from_json(json.loads(json.dumps(stats.to_json()))).to_json() == (
      stats.to_json())
  with pytest.raises(ValueError, match="stats of format 'almtok-latents-0'"):
    latents.Stats.from_json(dict(stats.to_json(), format="almtok-latents-0"))


def test_moments_merge_in_any_order_and_read_manifests_without_extremes():
  rng = np.random.default_rng(0)
  parts = [rng.standard_normal((n, 3)) * 4 for n in (5, 0, 11, 2)]
  whole = latents.Moments.of(np.concatenate(parts))
  merged = latents.Moments.zeros(3)
  for part in reversed(parts):
    merged = merged.merge(latents.Moments.from_json(latents.Moments.of(part).to_json()))
  assert merged.count == whole.count
  np.testing.assert_allclose(merged.mean_C, whole.mean_C, rtol=1e-12)
  np.testing.assert_allclose(merged.m2_C, whole.m2_C, rtol=1e-12)
  np.testing.assert_array_equal(merged.min_C, whole.min_C)
  np.testing.assert_array_equal(merged.max_C, whole.max_C)
  # A manifest written before the extremes were recorded: unknown, so any merge with it is
  # unbounded (and stats.json then records no range), while an empty one changes nothing.
  old = latents.Moments.from_json({"count": 2, "mean": [0.0] * 3, "m2": [1.0] * 3})
  assert np.all(old.min_C == -np.inf) and np.all(old.max_C == np.inf)
  mixed = whole.merge(old)
  assert np.all(np.isinf(mixed.min_C)) and np.all(np.isinf(mixed.max_C))
  empty = latents.Moments.from_json({"count": 0, "mean": [0.0] * 3, "m2": [0.0] * 3})
  np.testing.assert_array_equal(whole.merge(empty).max_C, whole.max_C)


def test_one_program_per_bucket_and_batching_does_not_change_latents():
  tokenizer = FrameRms()
  encoder = prepare.BucketEncoder(tokenizer, batch_size=3, bucket_seconds=1.0)
  wavs = [_noise(s, seed=i) for i, s in enumerate((0.3, 0.7, 1.0, 1.5, 1.9))]
  by_bucket = collections.defaultdict(list)
  for w in wavs:
    by_bucket[encoder.bucket(w.size)].append(w)
  assert sorted(by_bucket) == [SR, 2 * SR]
  out = [x for group in by_bucket.values() for x in encoder(group)]
  out += encoder(wavs[:1])  # A partial batch of a bucket seen before: no new program.
  assert tokenizer.traces == 2
  for w, x_TxC in zip([w for g in by_bucket.values() for w in g] + wavs[:1], out):
    alone_TxC = np.asarray(tokenizer.encode(jnp.asarray(w[None])))[0]
    assert x_TxC.shape == alone_TxC.shape == (int(w.size / SR * 25 + 1e-6), 8)
    np.testing.assert_allclose(x_TxC, alone_TxC, rtol=1e-5, atol=1e-5)


def _tree(latents_dir):
  out = {}
  for root, _, files in os.walk(latents_dir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, latents_dir)] = (f.read(), os.stat(path).st_mtime_ns)
  return out


def test_an_interrupted_run_resumes_to_the_same_output(prepared, broken_folder, tmp_path,
                                                       monkeypatch):
  config, workdir, _, _ = prepared
  reference = _tree(os.path.join(workdir, "latents"))
  real_write_shard = latents.write_shard
  calls = []

  def write_then_die(path, records):
    if len(calls) == 2:  # Two shards are finished; die half way through the third.
      with open(f"{path}.tmp", "wb") as f:
        f.write(b"half a shard")
      raise KeyboardInterrupt
    calls.append(path)
    return real_write_shard(path, records)

  monkeypatch.setattr(latents, "write_shard", write_then_die)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(config, str(tmp_path), tokenizer=FrameRms())
  latents_dir = str(tmp_path / "latents")
  before = _tree(latents_dir)
  assert len(calls) == 2 and "stats.json" not in before
  assert any(name.endswith(".tmp") for name in before)

  monkeypatch.setattr(latents, "write_shard", real_write_shard)
  done = prepare.prepare(config, str(tmp_path), tokenizer=FrameRms())
  after = _tree(latents_dir)
  assert sorted(after) == sorted(reference)  # No temporaries left, nothing missing.
  for name, (data, _) in reference.items():
    assert after[name][0] == data, name
  for path in calls:  # Shards finished before the interruption were not rewritten.
    for name in (os.path.basename(path), os.path.basename(path)[:-len(".array_record")] + ".json"):
      key = os.path.join(os.path.basename(os.path.dirname(path)), name)
      assert after[key][1] == before[key][1], key
  assert done.encoded == sum(len(g) for g in (TRAIN, VALIDATION)) - 2 * 3

  # A finished run is not redone at all, and a different config is refused.
  again = prepare.prepare(config, str(tmp_path), tokenizer=FrameRms())
  assert again.encoded == 0
  shards = lambda tree: {k: v[1] for k, v in tree.items() if os.sep in k}  # noqa: E731
  assert shards(_tree(latents_dir)) == shards(after)
  with config.unlocked():
    config.prepare.latent_dtype = "float32"
  with pytest.raises(configlib.ConfigError, match="prepared differently"):
    prepare.prepare(config, str(tmp_path), tokenizer=FrameRms())


def test_synth_sounds_with_the_mel_tokenizer_reads_back_normalized(tmp_path_factory):
  from almtok.latents import pipeline  # pylint: disable=g-import-not-at-top
  from almtok.tokenizers import mel  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("synth"))
  config = prepare_config.get_config("synth_sounds,size=tiny,seconds=1.0")
  prepare.check_config(config)
  stats = prepare.prepare(config, workdir, tokenizer=mel.MelTokenizer()).stats
  assert prepare.summary_line(stats) == "processed 24, skipped 0"
  assert stats.latent_dim == 256 and stats.frame_rate == 25.0
  latents_dir = os.path.join(workdir, "latents")
  for split, n in (("train", 16), ("validation", 4), ("test", 4)):
    ds = pipeline.make_dataset(latents_dir, split, seq_len=32, batch_size=4, shuffle=False,
                               repeat=False, process_index=0, process_count=1)
    batches = list(ds)
    assert len(batches) == n // 4
    for batch in batches:
      assert batch["x_BxLxC"].shape == (4, 32, 256) and batch["x_BxLxC"].dtype == np.float32
      assert batch["text_ids_BxN"].shape == (4, 32) and batch["text_ids_BxN"].dtype == np.int32
      np.testing.assert_array_equal(batch["mask_BxL"].sum(1), 25)  # 1 s at 25 Hz.
      assert not batch["x_BxLxC"][:, 25:].any()
    if split == "train":
      x_NxC = np.concatenate([b["x_BxLxC"][b["mask_BxL"]] for b in batches]).astype(np.float64)
      assert x_NxC.shape == (16 * 25, 256)
      np.testing.assert_allclose(x_NxC.mean(0), 0.0, atol=1e-4)
      np.testing.assert_allclose(x_NxC.std(0), 1.0, atol=1e-3)


def test_cli_refuses_a_bad_config_in_one_line(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "almtok.prepare", "--config=configs/prepare.py:audiocaps",
       f"--workdir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
      check=False)
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "error: config.dataset.audio_dir='': not a folder")
  assert not os.listdir(tmp_path)


def test_cli_prepares_the_tiny_synth_set(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "almtok.prepare",
       "--config=configs/prepare.py:synth_sounds,size=tiny,seconds=1.0,tokenizer=mel",
       f"--workdir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
      check=False)
  assert result.returncode == 0, result.stderr
  assert "processed 24, skipped 0;" in result.stdout
  with open(tmp_path / "latents" / "stats.json", encoding="utf-8") as f:
    assert json.load(f)["latent_dim"] == 256
