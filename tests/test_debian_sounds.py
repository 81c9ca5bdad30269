"""Tests for almtok.datasets.debian_sounds: scanning, captions, splits, clips and the TFDS build.

Tests that read the installed sample libraries skip when the Debian packages are missing, and
fail instead when CI=true. Shape letters: S samples.
"""

import collections
import json
import os
import pickle

import numpy as np
import pytest
import soundfile as sf

from almtok import audio
from almtok.datasets import debian_captions
from almtok.datasets import debian_catalog as ds

SR = audio.SAMPLE_RATE


def _require_packages() -> None:
  missing = ds.missing_packages()
  if missing:
    reason = f"debian_sounds needs {', '.join(missing)}: {ds.apt_command(missing)}"
    if os.environ.get("CI", "").lower() == "true":
      pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def sources() -> list[ds.SoundSource]:
  _require_packages()
  return ds.scan_sources()


# ---------------------------------------------------------------------------------------------
# Scanning.
# ---------------------------------------------------------------------------------------------


def test_scan_finds_every_package_in_a_stable_order(sources):
  per_package = collections.Counter(s.package for s in sources)
  # Counts of the Debian bookworm packages (165 / 240 / 102), with room for other versions.
  assert per_package[ds.SONIC_PI] >= 100
  assert per_package[ds.LMMS] >= 150
  assert per_package[ds.HYDROGEN] >= 50
  assert [s.id for s in ds.scan_sources()] == [s.id for s in sources]
  assert len({s.id for s in sources}) == len(sources)
  assert [s.package for s in sources] == sorted((s.package for s in sources), key=ds.PACKAGES.index)
  for s in sources:
    assert os.path.isfile(s.path) and s.path.lower().endswith(ds.AUDIO_EXTENSIONS)
    assert s.category in debian_captions.CATEGORIES and s.caption
  # Files that are not samples (sonic-pi's noise buffer, hydrogen's metronome click) stay out.
  assert not any("rand-stream" in s.path or s.path.endswith("data/click.wav") for s in sources)


def test_few_files_fall_into_misc(sources):
  misc = [s.id for s in sources if s.category == "misc"]
  assert len(misc) <= 5, misc
  assert len({s.category for s in sources}) >= 12


def test_subset_is_per_package_spread_and_deterministic(sources):
  kept = ds.subset(sources, 7)
  assert kept == ds.subset(sources, 7)
  assert collections.Counter(s.package for s in kept) == {p: 7 for p in ds.PACKAGES}
  lmms_folders = {s.id.split("/")[1] for s in kept if s.package == ds.LMMS}
  assert len(lmms_folders) >= 5  # Evenly spaced, not the first seven of one folder.
  assert ds.subset(sources, None) == sources


# ---------------------------------------------------------------------------------------------
# Captions and labels (no packages needed: names only).
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("package, relpath, caption, category", [
    (ds.SONIC_PI, "bd_haus.flac", "a house kick drum", "kick"),
    (ds.SONIC_PI, "ambi_choir.flac", "an ambient choir pad", "pad"),
    (ds.SONIC_PI, "tabla_ghe3.flac", "a tabla hit", "percussion"),
    (ds.SONIC_PI, "tabla_na_o.flac", "a tabla hit", "percussion"),
    (ds.SONIC_PI, "loop_tabla.flac", "a tabla loop", "loop"),
    (ds.SONIC_PI, "bass_hit_c.flac", "a bass hit in C", "bass"),
    (ds.SONIC_PI, "elec_soft_kick.flac", "a soft electronic kick drum", "kick"),
    (ds.SONIC_PI, "drum_cymbal_closed.flac", "a closed hi-hat", "hihat"),
    (ds.SONIC_PI, "drum_tom_hi_hard.flac", "a hard high tom", "tom"),
    (ds.SONIC_PI, "guit_harmonics.flac", "guitar harmonics", "instrument"),
    (ds.LMMS, "basses/bass_acid01.ogg", "an acid bass note", "bass"),
    (ds.LMMS, "basses/synth_acid01.ogg", "an acid synth bass note", "bass"),
    (ds.LMMS, "drums/nasty_bass01.ogg", "a nasty kick drum", "kick"),
    (ds.LMMS, "beats/rave_hihat01.ogg", "a rave hi-hat loop", "loop"),
    (ds.LMMS, "stringsnpads/space_strings02.ogg", "a spacey string pad", "pad"),
    (ds.LMMS, "waveforms/fmsine2.flac", "an FM sine waveform", "synth"),
    (ds.LMMS, "misc/applause01.ogg", "applause", "effect"),
    (ds.LMMS, "misc/undefined01.ogg", "a sound", "misc"),
    (ds.HYDROGEN, "GMRockKit/24Ride-1.wav", "a ride cymbal from a rock drum kit", "cymbal"),
    (ds.HYDROGEN, "GMRockKit/HatSemiOpen-Soft.wav",
     "a soft half-open hi-hat from a rock drum kit", "hihat"),
    (ds.HYDROGEN, "GMRockKit/Bell-Hardest.wav", "a very hard ride bell from a rock drum kit",
     "cymbal"),
    # The kit already says 808: it is not repeated.
    (ds.HYDROGEN, "TR808EmulationKit/808_Kick_Long.flac",
     "a long kick drum from an 808 drum machine", "kick"),
    # A kit the table does not know is named from its folder.
    (ds.HYDROGEN, "JazzBrushKit/Snare-Med.wav", "a medium snare drum from a jazz brush drum kit",
     "snare"),
])
def test_caption_and_category_from_names(package, relpath, caption, category):
  d = debian_captions.describe(package, relpath)
  assert (d.caption, d.category) == (caption, category)


@pytest.mark.parametrize("name, tokens", [
    ("HatSemiOpen-Hard", ["hat", "semi", "open", "hard"]),
    ("GMRockKit", ["gm", "rock", "kit"]),
    ("909beat01", ["909", "beat", "01"]),
    ("loop_3d_printer", ["loop", "3d", "printer"]),
    ("saw+sine", ["saw", "sine"]),
])
def test_name_tokens(name, tokens):
  assert debian_captions.name_tokens(name) == tokens


def test_labels_are_structured_json():
  s = ds.make_source(ds.LMMS, "/roots/lmms", "drums/hihat_closed03.ogg")
  labels = json.loads(ds.labels_json(s))
  assert labels == {
      "package": "lmms-common",
      "category": "hihat",
      "instrument": "closed hi-hat",
      "source_file": "/roots/lmms/drums/hihat_closed03.ogg",
      "tokens": ["hihat", "closed"],  # The take number is not a token.
  }
  assert s.id == "lmms-common/drums/hihat_closed03.ogg"
  kit = ds.make_source(ds.HYDROGEN, "/r", "TR808EmulationKit/808_Tom_Hi.flac")
  assert kit.labels["tokens"] == ["808", "tom", "hi"] and kit.labels["instrument"] == "high tom"


# ---------------------------------------------------------------------------------------------
# Splits.
# ---------------------------------------------------------------------------------------------


def test_split_fractions_follow_split_percent():
  ids = [f"pkg/file_{i}.wav" for i in range(20_000)]
  counts = collections.Counter(ds.split_of(i) for i in ids)
  for name, percent in ds.SPLIT_PERCENT:
    assert abs(counts[name] / len(ids) - percent / 100) < 0.015
  assert [ds.split_of(i) for i in ids[:50]] == [ds.split_of(i) for i in ids[:50]]


def test_adding_files_does_not_move_existing_ones(tmp_path):
  root = tmp_path / "samples"
  root.mkdir()
  for i in range(30):
    (root / f"bd_{i:02d}.flac").touch()
  before = {s.id: s.split for s in ds.scan_sources({ds.SONIC_PI: str(root)})}
  for i in range(30, 90):
    (root / f"sn_{i:02d}.flac").touch()
  after = {s.id: s.split for s in ds.scan_sources({ds.SONIC_PI: str(root)})}
  assert len(after) == 90
  assert {k: after[k] for k in before} == before


# ---------------------------------------------------------------------------------------------
# Clips.
# ---------------------------------------------------------------------------------------------


def _write(path, wav, rate):
  sf.write(str(path), wav, rate, subtype="PCM_16")
  return str(path)


def test_long_file_is_cut_to_max_seconds_at_the_model_rate(tmp_path):
  rng = np.random.default_rng(0)
  stereo_Sx2 = 0.3 * rng.standard_normal((3 * 44_100, 2)).astype(np.float32)
  path = _write(tmp_path / "long.wav", stereo_Sx2, 44_100)
  wav_S = ds.load_clip(path, sample_rate=SR, max_seconds=1.25)
  assert wav_S.dtype == np.float32 and wav_S.shape == (int(1.25 * SR),)
  assert ds.load_clip(path, sample_rate=SR, max_seconds=10.0).shape == (3 * SR,)


@pytest.mark.parametrize("kind, reason", [
    ("short", "too short"), ("silent", "silent"), ("garbage", "unreadable"),
    ("missing", "no such file")])
def test_unusable_files_raise_with_a_reason(tmp_path, kind, reason):
  path = str(tmp_path / f"{kind}.wav")
  if kind == "short":
    _write(path, 0.5 * np.ones(int(0.01 * SR), np.float32), SR)
  elif kind == "silent":
    _write(path, np.zeros(SR, np.float32), SR)
  elif kind == "garbage":
    with open(path, "wb") as f:
      f.write(b"RIFF not really a wave file")
  with pytest.raises(audio.AudioError) as e:
    ds.load_clip(path)
  assert e.value.reason.startswith(reason) and e.value.source == path


def test_missing_packages_name_the_apt_command(tmp_path):
  roots = {p: str(tmp_path / p) for p in ds.PACKAGES}
  assert ds.missing_packages(roots) == list(ds.PACKAGES)
  with pytest.raises(ds.MissingPackagesError) as e:
    ds.require_packages(roots)
  assert "apt-get install sonic-pi-samples lmms-common hydrogen-data" in str(e.value)
  assert ds.scan_sources(roots) == []


# ---------------------------------------------------------------------------------------------
# The TFDS builder, on a small copy of the libraries (symlinks) plus unusable files. The copy
# leaves validation with nothing but a silent file, which must not stop the build.
# ---------------------------------------------------------------------------------------------

MAX_SECONDS = 2.0


def _name_in_split(stem: str, split: str) -> str:
  return next(f"misc/{stem}{i:02d}.wav" for i in range(1000)
              if ds.split_of(f"{ds.LMMS}/misc/{stem}{i:02d}.wav") == split)


@pytest.fixture(scope="module")
def small_roots(tmp_path_factory, sources):
  base = tmp_path_factory.mktemp("roots")
  roots = {p: str(base / p) for p in ds.PACKAGES}
  for s in ds.subset(sources, 8):
    if s.split != "validation":
      link = os.path.join(roots[s.package], s.id.split("/", 1)[1])
      os.makedirs(os.path.dirname(link), exist_ok=True)
      os.symlink(s.path, link)
  lmms = roots[ds.LMMS]
  os.makedirs(os.path.join(lmms, "misc"), exist_ok=True)
  _write(os.path.join(lmms, _name_in_split("silence", "validation")), np.zeros(SR, np.float32), SR)
  with open(os.path.join(lmms, _name_in_split("broken", "train")), "wb") as f:
    f.write(b"OggS truncated")
  return roots


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_roots):
  from almtok.datasets import debian_sounds, tfds_common  # pylint: disable=g-import-not-at-top
  config = debian_sounds.DebianSoundsConfig(name="small", max_seconds=MAX_SECONDS)
  builder = debian_sounds.DebianSounds(roots=small_roots, config=config,
                            data_dir=str(tmp_path_factory.mktemp("tfds")))
  return tfds_common.build(builder)


def test_builder_writes_every_usable_clip_to_its_split(built, small_roots):
  from almtok.datasets import tfds_common  # pylint: disable=g-import-not-at-top
  expected = {}
  for s in ds.scan_sources(small_roots):
    try:
      ds.load_clip(s.path, max_seconds=MAX_SECONDS)
      expected[s.id] = s
    except audio.AudioError:
      pass
  skipped = {s.id for s in ds.scan_sources(small_roots)} - set(expected)
  assert {f"{ds.LMMS}/{_name_in_split('silence', 'validation')}",
          f"{ds.LMMS}/{_name_in_split('broken', 'train')}"} <= skipped

  seen = set()
  for split, source in built.as_data_source().items():
    for i in range(len(source)):
      record = source[i]
      clip_id = tfds_common.decode_text(record["id"])
      assert clip_id not in seen and ds.split_of(clip_id) == split
      seen.add(clip_id)
      want = expected[clip_id]
      assert tfds_common.decode_text(record["caption"]) == want.caption
      assert json.loads(tfds_common.decode_text(record["labels"])) == want.labels
      wav_S = np.asarray(record["audio"])
      assert wav_S.dtype == np.float32 and wav_S.ndim == 1
      assert 0 < wav_S.size <= MAX_SECONDS * SR
      np.testing.assert_allclose(float(record["seconds"]), wav_S.size / SR, rtol=1e-6)
  assert seen == set(expected)
  # Validation held only a silent file, so it is left out rather than failing the build.
  assert set(built.as_data_source()) == {s.split for s in expected.values()}
  assert "validation" not in built.as_data_source()
  assert {s.package for s in expected.values()} == set(ds.PACKAGES)


def test_builder_is_picklable_with_its_roots(built, small_roots):
  again = pickle.loads(pickle.dumps(built))
  assert again._roots == small_roots  # pylint: disable=protected-access
  assert again.builder_config.max_seconds == MAX_SECONDS


def test_builder_without_packages_says_what_to_install(tmp_path):
  from almtok.datasets import debian_sounds, tfds_common  # pylint: disable=g-import-not-at-top
  builder = debian_sounds.DebianSounds(roots={p: str(tmp_path / p) for p in ds.PACKAGES},
                            data_dir=str(tmp_path / "tfds"))
  with pytest.raises(ds.MissingPackagesError, match="apt-get install sonic-pi-samples"):
    tfds_common.build(builder)
