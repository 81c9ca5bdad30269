"""Audio I/O: round trips, resampling, downmixing, log-mel, and every broken-file case."""

import os

import numpy as np
import pytest
import soundfile as sf

from almtok import audio

SR = audio.SAMPLE_RATE


def _tone(freq, seconds=0.5, sr=SR, amp=0.5):
  t = np.arange(int(seconds * sr)) / sr
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype,tol", [
    ("WAV", "PCM_16", 2e-4), ("WAV", "FLOAT", 0.0), ("FLAC", "PCM_16", 2e-4),
    ("OGG", "VORBIS", None), ("MP3", "MPEG_LAYER_III", None)])
def test_load_round_trip_formats(tmp_path, fmt, subtype, tol):
  wav = _tone(440.0)
  path = tmp_path / f"x.{fmt.lower()}"
  sf.write(path, wav, SR, format=fmt, subtype=subtype)
  out = audio.load(path, SR)
  assert out.dtype == np.float32 and out.ndim == 1
  if tol is not None:
    np.testing.assert_allclose(out, wav, atol=tol)
  else:  # Lossy codecs: same length (within codec padding) and the same dominant frequency.
    assert abs(len(out) - len(wav)) < 0.1 * SR
    spectrum = np.abs(np.fft.rfft(out[:SR // 4]))
    assert abs(np.argmax(spectrum) * SR / (SR // 4) - 440.0) < 10.0


def test_write_16bit_and_float(tmp_path):
  wav = np.array([0.0, 0.5, -0.5, 1.5, -2.0], np.float32)
  audio.write(tmp_path / "a.wav", wav, SR, "PCM_16")
  audio.write(tmp_path / "b.wav", wav, SR, "FLOAT")
  assert sf.info(tmp_path / "a.wav").subtype == "PCM_16"
  assert sf.info(tmp_path / "b.wav").subtype == "FLOAT"
  a, _ = sf.read(tmp_path / "a.wav", dtype="float32")
  b, _ = sf.read(tmp_path / "b.wav", dtype="float32")
  assert a.max() <= 1.0 and a.min() >= -1.0  # 16-bit clips.
  np.testing.assert_array_equal(b, wav)        # Float keeps everything.
  with pytest.raises(audio.AudioError, match="non-finite"):
    audio.write(tmp_path / "c.wav", np.array([np.nan], np.float32))


def test_downmix_to_mono(tmp_path):
  left, right = _tone(300.0), _tone(500.0)
  sf.write(tmp_path / "st.wav", np.stack([left, right], 1), SR, subtype="FLOAT")
  np.testing.assert_allclose(audio.load(tmp_path / "st.wav"), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_keeps_pitch_and_length(tmp_path, rate):
  sf.write(tmp_path / "r.wav", _tone(1000.0, 1.0, sr=rate), rate, subtype="FLOAT")
  out = audio.load(tmp_path / "r.wav", SR)
  assert len(out) == SR
  spectrum = np.abs(np.fft.rfft(out))
  assert abs(np.argmax(spectrum) * SR / len(out) - 1000.0) <= 1.0
  assert abs(audio.peak(out[SR // 10:-SR // 10]) - 0.5) < 0.02


def test_duration_peak_rms(tmp_path):
  wav = _tone(200.0, 1.25, amp=0.25)
  audio.write(tmp_path / "d.wav", wav)
  assert audio.duration(tmp_path / "d.wav") == pytest.approx(1.25)
  assert audio.peak(wav) == pytest.approx(0.25, abs=1e-3)
  assert audio.rms_db(wav) == pytest.approx(20 * np.log10(0.25 / np.sqrt(2)), abs=0.05)
  assert audio.rms_db(np.zeros(10)) == float("-inf")


def test_log_mel_shape_and_peak_bin():
  wav = _tone(1000.0, 1.0)
  mel = audio.log_mel(wav)
  assert mel.shape == (audio.N_MELS, 1 + len(wav) // audio.HOP_LENGTH)
  assert mel.dtype == np.float32 and np.all(np.isfinite(mel))
  # The loudest bin is the one whose filter is centred nearest 1 kHz.
  import librosa  # pylint: disable=g-import-not-at-top
  centres = librosa.mel_frequencies(audio.N_MELS + 2, fmin=0, fmax=SR / 2)[1:-1]
  assert np.argmax(mel[:, 50]) == np.argmin(np.abs(centres - 1000.0))
  assert mel.min() >= -100.0
  # Silence sits exactly at the floor.
  np.testing.assert_array_equal(audio.log_mel(np.zeros(1600, np.float32)), -100.0)


def _write_bytes(path, data):
  with open(path, "wb") as f:
    f.write(data)
  return path


@pytest.mark.parametrize("case,reason", [
    ("missing", "no such file"),
    ("garbage", "unreadable"),
    ("truncated_header", "unreadable"),
    ("empty_wav", "empty"),
    ("nan_samples", "non-finite"),
    ("inf_samples", "non-finite"),
    ("zero_bytes", "unreadable"),
])
def test_broken_files_raise_one_clear_error(tmp_path, case, reason):
  path = tmp_path / f"{case}.wav"
  if case == "garbage":
    _write_bytes(path, os.urandom(2048))
  elif case == "truncated_header":
    audio.write(path, _tone(440.0))
    _write_bytes(path, open(path, "rb").read()[:20])
  elif case == "empty_wav":
    sf.write(path, np.zeros((0,), np.float32), SR)
  elif case == "nan_samples":
    sf.write(path, np.array([0.1, np.nan, 0.2], np.float32), SR, subtype="FLOAT")
  elif case == "inf_samples":
    sf.write(path, np.array([0.1, np.inf, 0.2], np.float32), SR, subtype="FLOAT")
  elif case == "zero_bytes":
    _write_bytes(path, b"")
  with pytest.raises(audio.AudioError) as info:
    audio.load(path)
  message = str(info.value)
  assert str(path) in message and reason in message
  assert "\n" not in message
  assert isinstance(info.value, ValueError)


def test_in_memory_validation():
  with pytest.raises(audio.AudioError, match="zero channels"):
    audio.to_mono_at_rate(np.zeros((10, 0), np.float32), SR, source="mem")
  with pytest.raises(audio.AudioError, match="mem: expected 1 or 2 dimensions"):
    audio.to_mono_at_rate(np.zeros((2, 2, 2), np.float32), SR, source="mem")
  np.testing.assert_allclose(
      audio.to_mono_at_rate(np.ones((4, 2), np.float32), SR), np.ones(4, np.float32))


# ---------------------------------------------------------------------------------------------
# Writing: one stated gain, a warning when samples clip, and a report of the levels written.
# ---------------------------------------------------------------------------------------------


def _read(path):
  samples, rate = sf.read(path, dtype="float64")
  assert rate == SR
  return samples


def _clip_warnings(caplog):
  return [r for r in caplog.records if r.name == "absl" and r.levelname == "WARNING"
          and "clipped" in r.getMessage()]


def test_write_clip_is_the_default_and_keeps_levels(tmp_path, caplog):
  wav = _tone(440.0, amp=0.25)
  with caplog.at_level("WARNING", logger="absl"):
    report = audio.write(tmp_path / "a.wav", wav)
  assert report.strategy == "clip" and report.gain == 1.0 and report.gain_db == 0.0
  assert report.clipped == 0.0
  assert report.peak == pytest.approx(0.25, abs=1e-3)
  assert report.rms == pytest.approx(0.25 / np.sqrt(2), rel=1e-3)
  np.testing.assert_allclose(_read(tmp_path / "a.wav"), wav, atol=1 / 32768)
  assert not _clip_warnings(caplog)


def test_write_clip_warns_once_and_reports_the_clipped_fraction(tmp_path, caplog):
  wav = _tone(440.0, amp=3.0)
  path = tmp_path / "loud.wav"
  with caplog.at_level("WARNING", logger="absl"):
    report = audio.write(path, wav, strategy="clip")
  warnings = _clip_warnings(caplog)
  assert len(warnings) == 1
  want = float(np.mean(np.abs(wav) > 1.0))
  assert 0.7 < want < 0.8   # |3 sin| > 1 for 1 - (2/pi) asin(1/3) of the time.
  message = warnings[0].getMessage()
  assert str(path) in message and f"{100 * want:.1f}%" in message and "+9.5 dBFS" in message
  assert report.clipped == pytest.approx(want)
  assert report.gain == 1.0 and report.peak == 1.0
  samples = _read(path)
  assert np.max(np.abs(samples)) <= 1.0
  assert np.mean(np.abs(samples) >= 32767 / 32768) == pytest.approx(want, abs=1e-3)


def test_write_peak_strategy_puts_the_peak_at_peak_db(tmp_path, caplog):
  wav = _tone(440.0, amp=3.0)
  with caplog.at_level("WARNING", logger="absl"):
    report = audio.write(tmp_path / "p.wav", wav, strategy="peak")
    quiet = audio.write(tmp_path / "q.wav", wav, strategy="peak", peak_db=-6.0)
  assert not _clip_warnings(caplog)
  assert report.gain == pytest.approx(10 ** (-1 / 20) / 3.0, rel=1e-5)
  assert report.gain_db == pytest.approx(-1.0 - 20 * np.log10(3.0), abs=1e-4)
  assert report.peak == pytest.approx(10 ** (-1 / 20), rel=1e-5) and report.clipped == 0.0
  np.testing.assert_allclose(_read(tmp_path / "p.wav"), wav * report.gain, atol=1 / 32768)
  assert audio.peak(_read(tmp_path / "q.wav")) == pytest.approx(10 ** (-6 / 20), abs=1e-4)
  assert quiet.gain_db == pytest.approx(-6.0 - 20 * np.log10(3.0), abs=1e-4)


def test_write_limit_strategy_lowers_only_what_would_clip(tmp_path, caplog):
  loud, quiet = _tone(440.0, amp=3.0), _tone(440.0, amp=0.25)
  with caplog.at_level("WARNING", logger="absl"):
    lowered = audio.write(tmp_path / "l.wav", loud, strategy="limit")
    kept = audio.write(tmp_path / "k.wav", quiet, strategy="limit")
  assert not _clip_warnings(caplog)
  assert lowered.gain == pytest.approx(10 ** (-1 / 20) / 3.0, rel=1e-5)
  assert lowered.peak == pytest.approx(10 ** (-1 / 20), rel=1e-5) and lowered.clipped == 0.0
  np.testing.assert_allclose(_read(tmp_path / "l.wav"), loud * lowered.gain, atol=1 / 32768)
  assert kept.gain == 1.0 and kept.gain_db == 0.0
  np.testing.assert_allclose(_read(tmp_path / "k.wav"), quiet, atol=1 / 32768)


def test_write_loudness_strategy_reaches_the_rms_unless_the_peak_would_clip(tmp_path, caplog):
  sine = _tone(440.0, amp=0.01)   # Crest factor 3 dB: -20 dBFS RMS puts the peak at -17 dBFS.
  with caplog.at_level("WARNING", logger="absl"):
    report = audio.write(tmp_path / "s.wav", sine, strategy="loudness")
    # A single click: reaching -20 dBFS RMS would need a peak far above full scale, so the gain
    # stops where the peak reaches -1 dBFS.
    click = np.zeros(SR, np.float32)
    click[100] = 0.1
    limited = audio.write(tmp_path / "c.wav", click, strategy="loudness", loudness_db=-20.0)
  assert not _clip_warnings(caplog)
  assert report.rms == pytest.approx(0.1, rel=1e-3)
  assert audio.rms_db(_read(tmp_path / "s.wav")) == pytest.approx(-20.0, abs=0.01)
  assert report.gain == pytest.approx(0.1 / (0.01 / np.sqrt(2)), rel=1e-3)
  assert limited.gain == pytest.approx(10 ** (-1 / 20) / 0.1, rel=1e-5)
  assert limited.peak == pytest.approx(10 ** (-1 / 20), rel=1e-5) and limited.clipped == 0.0
  assert audio.peak(_read(tmp_path / "c.wav")) == pytest.approx(10 ** (-1 / 20), abs=1e-4)
  assert audio.rms_db(_read(tmp_path / "c.wav")) < -20.0


@pytest.mark.parametrize("strategy", audio.WRITE_STRATEGIES)
def test_write_silence_has_unit_gain(tmp_path, strategy, caplog):
  with caplog.at_level("WARNING", logger="absl"):
    report = audio.write(tmp_path / "z.wav", np.zeros(1600, np.float32), strategy=strategy)
  assert (report.gain, report.gain_db, report.peak, report.rms, report.clipped) == (
      1.0, 0.0, 0.0, 0.0, 0.0)
  np.testing.assert_array_equal(_read(tmp_path / "z.wav"), 0.0)
  assert not caplog.records


def test_write_report_is_json_and_the_write_is_atomic(tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  path = tmp_path / "sub" / "r.wav"
  report = audio.write(path, _tone(440.0, amp=2.0), strategy="loudness")
  assert json.loads(json.dumps(dataclasses.asdict(report)))["strategy"] == "loudness"
  assert os.listdir(tmp_path / "sub") == ["r.wav"]   # No temporary left beside it.
  with pytest.raises(ValueError, match="strategy"):
    audio.write(path, _tone(440.0), strategy="normalize")
  with pytest.raises(audio.AudioError, match="non-finite"):
    audio.write(path, np.array([np.inf], np.float32))
  assert os.listdir(tmp_path / "sub") == ["r.wav"]


def test_float_files_keep_samples_beyond_full_scale_but_say_so(tmp_path, caplog):
  wav = np.array([0.0, 0.5, 1.5, -2.0], np.float32)
  with caplog.at_level("WARNING", logger="absl"):
    report = audio.write(tmp_path / "f.wav", wav, subtype="FLOAT")
  np.testing.assert_array_equal(_read(tmp_path / "f.wav"), wav)
  assert report.clipped == 0.5 and report.peak == 2.0
  assert len(_clip_warnings(caplog)) == 0
  assert len([r for r in caplog.records if "beyond" in r.getMessage()]) == 1


def test_levels():
  wav = _tone(440.0, amp=2.0)
  lv = audio.levels(wav)
  assert lv["peak"] == pytest.approx(2.0, abs=1e-3)
  assert lv["peak_db"] == pytest.approx(20 * np.log10(2.0), abs=0.01)
  assert lv["rms_db"] == pytest.approx(audio.rms_db(wav))
  assert lv["clipped"] == pytest.approx(np.mean(np.abs(wav) > 1.0))
  assert audio.levels(np.zeros(4))["peak_db"] == float("-inf")
  assert "% clipped" in audio.format_levels(wav)
