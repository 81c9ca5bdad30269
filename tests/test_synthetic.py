"""Tests for the synthetic captioned-sound generator.

The audio checks measure the rendered samples themselves (dominant frequency, spectral slope,
onset times, levels) and compare them with the labels; the caption checks compare the caption's
words with the labels. Shape letters: S samples, F frames, K frequency bins.
"""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from almtok import audio
from almtok.datasets import synth_captions
from almtok.datasets import synth_generator
from almtok.datasets import synth_render as render
from almtok.datasets import synth_scenes as scenes

SR = scenes.DEFAULT_SAMPLE_RATE
CUES = synth_generator.VOCABULARY["cues"]


@pytest.fixture(scope="module")
def clips():
  return [synth_generator.render_clip(seed) for seed in range(150)]


def _event(seconds: float = 2.0, seed: int = 0, **fixed) -> dict:
  return scenes.make_event(np.random.default_rng(seed), 0.0, seconds, **fixed)


def _render(ev: dict, seed: int = 0) -> np.ndarray:
  return render.render_event(ev, SR, np.random.default_rng(seed))


def _spectrogram(x_S: np.ndarray, n_fft: int = 2048, hop: int = 256) -> np.ndarray:
  """Power spectrogram F x K (Hann window)."""
  frames_FxN = np.lib.stride_tricks.sliding_window_view(x_S, n_fft)[::hop]
  return np.abs(np.fft.rfft(frames_FxN * np.hanning(n_fft)[None, :], axis=-1)) ** 2


def _dominant_hz(x_S: np.ndarray, n_fft: int = 2048, hop: int = 256) -> np.ndarray:
  """Per-frame frequency of the strongest STFT bin, for frames within 30 dB of the loudest."""
  power_FxK = _spectrogram(x_S, n_fft, hop)
  energy_F = power_FxK.sum(axis=-1)
  loud_F = energy_F > energy_F.max() * 1e-3
  return (np.argmax(power_FxK, axis=-1) * SR / n_fft)[loud_F]


def _mentions(caption: str, cues) -> bool:
  text = caption.lower()
  return any(re.search(rf"\b{re.escape(cue)}s?\b", text) for cue in cues)


def _onsets(x_S: np.ndarray, min_spacing_s: float) -> np.ndarray:
  """Times (1 ms grid) where the RMS of the trailing 20 ms rises through -30 dB of its maximum.

  A trailing window reacts within a millisecond or two of a loud onset and, being longer than
  one period of a 50 Hz kick, does not dip at the waveform's zero crossings.
  """
  window, hop = SR // 50, SR // 1000
  energy_S = np.concatenate([[0.0], np.cumsum(x_S.astype(np.float64) ** 2)])
  ends_F = np.arange(window, x_S.size + 1, hop)
  env_F = (energy_S[ends_F] - energy_S[ends_F - window]) / window
  above_F = env_F > env_F.max() * 1e-3
  rises = [f for f in range(1, env_F.size) if above_F[f] and not above_F[f - 1]]
  kept = []
  for r in rises:
    if not kept or (r - kept[-1]) * hop / SR > min_spacing_s:
      kept.append(r)
  return (ends_F[kept] - 1) / SR


# ----------------------------------------------------------------------------------------------
# API, determinism, splits.

def test_module_does_not_import_tensorflow():
  code = ("import sys, almtok.datasets.synth_generator; "
          "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', "
          "'tensorflow_datasets', 'jax')]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_same_seed_is_bit_identical_and_seeds_differ():
  a, b = synth_generator.render_clip(1234), synth_generator.render_clip(1234)
  assert a.wav.tobytes() == b.wav.tobytes()
  assert a.caption == b.caption
  assert json.dumps(a.labels, sort_keys=True) == json.dumps(b.labels, sort_keys=True)
  others = [synth_generator.render_clip(s) for s in (1235, 1236, 1237)]
  assert all(not np.array_equal(a.wav, o.wav) for o in others)
  assert len({a.caption} | {o.caption for o in others}) == 4


def test_splits_are_disjoint_and_sized():
  seeds = {s: synth_generator.split_seeds(s, 2000) for s in ("train", "validation", "test")}
  assert all(len(v) == len(set(v)) == 2000 for v in seeds.values())
  assert not set(seeds["train"]) & set(seeds["validation"])
  assert not set(seeds["train"]) & set(seeds["test"])
  assert not set(seeds["validation"]) & set(seeds["test"])
  assert synth_generator.split_seeds("test", 3, base_seed=10) == seeds["test"][10:13]
  clips = list(synth_generator.generate("validation", 3, seconds=2.0))
  assert [c.seed for c in clips] == seeds["validation"][:3]
  assert all(c.wav.shape == (2 * SR,) for c in clips)
  with pytest.raises(ValueError):
    synth_generator.split_seeds("dev", 3)
  with pytest.raises(ValueError):
    synth_generator.split_seeds("train", 2**41)


@pytest.mark.parametrize("seconds,sample_rate", [(1.0, 16000), (2.5, 22050), (10.0, 16000)])
def test_other_lengths_and_rates(seconds, sample_rate):
  for seed in range(6):
    clip = synth_generator.render_clip(seed, seconds, sample_rate)
    assert clip.wav.shape == (round(seconds * sample_rate),)
    assert clip.labels["sample_rate"] == sample_rate
    assert all(0.0 <= ev["start_s"] < ev["end_s"] <= seconds for ev in clip.labels["events"])
    assert audio.peak(clip.wav) <= render.PEAK


def test_clip_format(clips):
  for clip in clips:
    assert clip.wav.dtype == np.float32 and clip.wav.shape == (4 * SR,)
    assert np.all(np.isfinite(clip.wav))
    assert 0.1 < audio.peak(clip.wav) <= render.PEAK
    assert json.loads(json.dumps(clip.labels)) == clip.labels
    assert clip.caption and clip.caption[0].isupper()


def test_content_covers_the_vocabulary(clips):
  events = [ev for c in clips for ev in c.labels["events"]]
  assert {ev["kind"] for ev in events} == set(scenes.KINDS)
  assert {ev["envelope"] for ev in events} == set(scenes.ENVELOPES)
  assert {c.labels["relation"] for c in clips} == set(scenes.RELATIONS)
  assert {len(c.labels["events"]) for c in clips} == {1, 2, 3}
  assert any(g["end_s"] - g["start_s"] >= scenes.PAUSE_S for c in clips
             for g in c.labels["gaps"])


# ----------------------------------------------------------------------------------------------
# Labels: complete, consistent, and enough to re-render the clip.

def test_labels_are_complete_and_consistent(clips):
  vocab = synth_generator.VOCABULARY
  for clip in clips:
    labels = clip.labels
    events = labels["events"]
    assert [ev["start_s"] for ev in events] == sorted(ev["start_s"] for ev in events)
    for ev in events:
      assert set(ev) == set(scenes.EVENT_KEYS)
      kind = ev["kind"]
      assert (ev["register"] in vocab["registers"]) == (kind in ("tone", "chord", "arpeggio"))
      assert (ev["waveform"] in vocab["waveforms"]) == (kind in ("tone", "chord", "arpeggio",
                                                                 "chirp"))
      assert (ev["direction"] in vocab["directions"]) == (kind in ("arpeggio", "chirp"))
      assert (ev["color"] in vocab["colors"]) == (kind == "noise")
      assert (ev["drum"] in vocab["drums"]) == (kind == "drums")
      assert ev["envelope"] in vocab["envelopes"]
      if ev["register"]:
        lo, hi = vocab["registers"][ev["register"]]
        notes = ev["notes_hz"] or [ev["f0_hz"]]
        assert all(lo <= f <= hi for f in notes), ev
      if kind == "chirp":
        assert (ev["f1_hz"] > ev["f0_hz"]) == (ev["direction"] == "rising")
      if kind == "arpeggio":
        steps = np.diff(ev["notes_hz"])
        assert np.all(steps > 0) if ev["direction"] == "rising" else np.all(steps < 0)
      if scenes.is_pulsed(ev):
        lo, hi = vocab["tempos"][ev["tempo"]]
        assert lo <= ev["bpm"] <= hi
        assert len(ev["onsets_s"]) >= 3
        np.testing.assert_allclose(np.diff(ev["onsets_s"]), 60.0 / ev["bpm"], atol=2e-4)
        assert ev["onsets_s"][0] == ev["start_s"] and ev["onsets_s"][-1] < ev["end_s"]
      else:
        assert ev["bpm"] is None and ev["onsets_s"] is None
    if labels["relation"] == "single":
      assert len(events) == 1
    elif labels["relation"] == "sequence":
      assert len(events) >= 2
      assert all(a["end_s"] <= b["start_s"] for a, b in zip(events, events[1:]))
    else:
      bg = events[0]
      assert bg["background"] and not any(ev["background"] for ev in events[1:])
      assert all(bg["start_s"] < ev["start_s"] and ev["end_s"] <= bg["end_s"]
                 for ev in events[1:])


def test_labels_re_render_the_clip(clips):
  for clip in clips[:40]:
    labels = clip.labels
    wav_S, events = render.mix(labels["events"], labels["seconds"], labels["sample_rate"],
                                  clip.seed)
    np.testing.assert_allclose(wav_S, clip.wav, atol=1e-6)
    for i, ev in enumerate(events):
      seg_N = render.render_event(ev, SR, np.random.default_rng([clip.seed, i]))
      assert audio.peak(seg_N) == pytest.approx(10 ** (ev["gain_db"] / 20), rel=1e-5)


def test_mix_scales_loud_overlaps_and_updates_gains():
  rng = np.random.default_rng(0)
  events = [scenes.make_event(rng, 0.0, 1.5, kind="noise", color="white", gain_db=-1.0,
                                 envelope="sustained"),
            scenes.make_event(rng, 0.5, 1.0, kind="tone", gain_db=-1.0,
                                 envelope="sustained")]
  wav_S, scaled = render.mix(events, 2.0, SR, seed=3)
  assert audio.peak(wav_S) == pytest.approx(render.PEAK, rel=1e-5)
  assert audio.peak(wav_S) <= render.PEAK
  shift = [b["gain_db"] - a["gain_db"] for a, b in zip(events, scaled)]
  assert shift[0] < 0 and shift[0] == pytest.approx(shift[1])
  again_S, same = render.mix(scaled, 2.0, SR, seed=3)
  np.testing.assert_allclose(again_S, wav_S, atol=1e-6)
  assert [ev["gain_db"] for ev in same] == pytest.approx([ev["gain_db"] for ev in scaled],
                                                        abs=1e-6)


def test_silences_are_silent_and_events_are_not(clips):
  checked = 0
  for clip in clips:
    for gap in clip.labels["silences"]:
      part = clip.wav[round(gap["start_s"] * SR):round(gap["end_s"] * SR)]
      assert audio.rms_db(part) < -60.0, (clip.seed, gap)
      checked += 1
    for ev in clip.labels["events"]:
      part = clip.wav[round(ev["start_s"] * SR):round(ev["end_s"] * SR)]
      assert audio.rms_db(part) > -50.0, (clip.seed, ev)
  assert checked > 100


# ----------------------------------------------------------------------------------------------
# The audio matches its labels.

@pytest.mark.parametrize("waveform", scenes.WAVEFORMS)
def test_chirp_direction(waveform):
  for direction in scenes.DIRECTIONS:
    for seed in range(3):
      ev = _event(1.5, seed, kind="chirp", waveform=waveform, direction=direction,
                  envelope="sustained")
      f_F = _dominant_hz(_render(ev), n_fft=1024, hop=160)
      slope = np.polyfit(np.arange(f_F.size), np.log(f_F), 1)[0]
      corr = np.corrcoef(np.arange(f_F.size), np.log(f_F))[0, 1]
      assert (slope > 0) == (direction == "rising") and abs(corr) > 0.95, (ev, corr)
      # The first and last frames sit near the labelled end frequencies.
      assert f_F[0] == pytest.approx(ev["f0_hz"], rel=0.2)
      assert f_F[-1] == pytest.approx(ev["f1_hz"], rel=0.2)


def test_chirp_direction_on_log_mel():
  for direction in scenes.DIRECTIONS:
    ev = _event(2.0, 1, kind="chirp", waveform="saw", direction=direction, envelope="sustained")
    mel_MxF = audio.log_mel(_render(ev).astype(np.float32))[:, 5:-5]
    peak_bin_F = np.argmax(mel_MxF, axis=0)
    halves = np.array_split(peak_bin_F, 2)
    assert (np.median(halves[1]) > np.median(halves[0])) == (direction == "rising")
    # Over the whole sweep the mel argmax moves by many bins, monotonically on the whole.
    assert abs(np.corrcoef(np.arange(peak_bin_F.size), peak_bin_F)[0, 1]) > 0.9


@pytest.mark.parametrize("register", list(scenes.REGISTERS))
def test_register_sets_the_dominant_frequency(register):
  lo, hi = scenes.REGISTERS[register]
  for waveform in scenes.WAVEFORMS:
    for seed in range(4):
      tone = _event(1.0, seed, kind="tone", register=register, waveform=waveform,
                    envelope="sustained")
      f_F = _dominant_hz(_render(tone))
      assert lo <= np.median(f_F) <= hi, tone
      assert np.median(f_F) == pytest.approx(tone["f0_hz"], abs=SR / 2048)
      chord = _event(1.0, seed, kind="chord", register=register, waveform=waveform,
                     envelope="sustained")
      assert lo <= np.median(_dominant_hz(_render(chord))) <= hi, chord


def test_arpeggio_plays_its_notes_in_order():
  for direction in scenes.DIRECTIONS:
    for envelope in ("staccato", "sustained"):
      ev = _event(3.0, 2, kind="arpeggio", direction=direction, envelope=envelope,
                  register="mid", waveform="square", tempo="medium")
      x_S = _render(ev)
      heard = []
      for onset in ev["onsets_s"][:4]:
        a = round((onset + 0.02) * SR)
        heard.append(np.median(_dominant_hz(x_S[a:a + round(0.09 * SR)], 1024, 64)))
      np.testing.assert_allclose(heard, ev["notes_hz"], rtol=0.03)
      assert np.all(np.diff(heard) > 0) == (direction == "rising")


def _spectral_slope(x_S: np.ndarray) -> float:
  """Slope of log10 power against log10 frequency between 100 Hz and 6 kHz."""
  power_K = _spectrogram(x_S, 2048, 1024).mean(axis=0)
  f_K = np.fft.rfftfreq(2048, 1 / SR)
  band = (f_K >= 100) & (f_K <= 6000)
  return float(np.polyfit(np.log10(f_K[band]), np.log10(power_K[band]), 1)[0])


def test_noise_colors_have_their_spectral_slopes():
  slopes = {}
  for color in scenes.COLORS:
    ev = _event(2.0, 3, kind="noise", color=color, envelope="sustained")
    slopes[color] = _spectral_slope(_render(ev, seed=5))
  assert slopes["white"] == pytest.approx(0.0, abs=0.15)
  assert slopes["pink"] == pytest.approx(-1.0, abs=0.15)
  assert slopes["brown"] == pytest.approx(-2.0, abs=0.2)
  assert slopes["white"] > slopes["pink"] > slopes["brown"]


@pytest.mark.parametrize("kind,extra", [
    ("clicks", {}), ("drums", {"drum": "kick"}), ("drums", {"drum": "snare"}),
    ("drums", {"drum": "kick_snare"}), ("tone", {"envelope": "staccato", "register": "high"}),
    ("noise", {"envelope": "staccato", "color": "pink"}),
    ("chord", {"envelope": "staccato", "register": "low"})])
def test_pulses_fall_on_the_beat(kind, extra):
  for tempo in scenes.TEMPOS:
    fixed = {"envelope": "sustained", **extra}
    ev = scenes.make_event(np.random.default_rng(4), 0.25, 3.5, kind=kind, tempo=tempo,
                              **fixed)
    wav_S, _ = render.mix([ev], 4.0, SR, seed=9)
    beat = 60.0 / ev["bpm"]
    found = _onsets(wav_S, 0.5 * beat)
    assert found.size == len(ev["onsets_s"]) >= 3, (ev, found)
    np.testing.assert_allclose(found, ev["onsets_s"], atol=0.004)
    np.testing.assert_allclose(np.diff(found), beat, atol=0.004)


def test_envelopes_shape_the_level():
  def quarter_db(ev):
    return np.asarray([audio.rms_db(q) for q in np.array_split(_render(ev), 4)])

  for kind in ("tone", "noise", "chirp", "chord"):
    fade_in = quarter_db(_event(2.0, 6, kind=kind, envelope="fade_in"))
    fade_out = quarter_db(_event(2.0, 6, kind=kind, envelope="fade_out"))
    steady = quarter_db(_event(2.0, 6, kind=kind, envelope="sustained"))
    assert fade_in[3] - fade_in[0] > 15 and np.all(np.diff(fade_in) > 0), (kind, fade_in)
    assert fade_out[0] - fade_out[3] > 15 and np.all(np.diff(fade_out) < 0), (kind, fade_out)
    assert np.ptp(steady) < 3.0, (kind, steady)
  # Pulse trains: the level of successive pulses follows the envelope.
  for kind in ("clicks", "drums"):
    for envelope in ("fade_in", "fade_out", "sustained"):
      ev = _event(2.0, 6, kind=kind, envelope=envelope, tempo="fast", drum="kick")
      x_S = _render(ev)
      starts = [round(t * SR) for t in ev["onsets_s"]]
      peaks_db = np.asarray([20 * np.log10(audio.peak(x_S[a:a + SR // 20])) for a in starts])
      steps = np.diff(peaks_db)
      if envelope == "sustained":
        assert np.ptp(peaks_db) < 0.5, (kind, peaks_db)
      else:
        sign = 1 if envelope == "fade_in" else -1
        assert np.all(sign * steps > 0) and sign * (peaks_db[-1] - peaks_db[0]) > 25, peaks_db
  # Staccato notes leave most of each beat silent.
  x_S = _render(_event(2.0, 6, kind="tone", envelope="staccato", tempo="slow"))
  frames_db = [audio.rms_db(f) for f in np.array_split(x_S, 200)]
  assert np.mean(np.asarray(frames_db) < -80) > 0.5


def test_rendering_has_no_aliasing():
  """A 3.9 kHz sawtooth keeps everything above 7.2 kHz tiny (harmonics stop below Nyquist)."""
  ev = _event(1.0, 0, kind="tone", waveform="saw", register="high", f0_hz=3900.0,
              envelope="sustained")
  power_K = _spectrogram(_render(ev), 2048, 512).mean(axis=0)
  # Folded harmonics would land at 8000 - (k * 3900 - 8000) Hz, e.g. 4200 Hz and 400 Hz.
  for f in (400.0, 4200.0, 7500.0):
    k = int(round(f * 2048 / SR))
    assert 10 * np.log10(power_K[k - 2:k + 3].max() / power_K.max()) < -80, f


# ----------------------------------------------------------------------------------------------
# Captions.

def _caption_problems(caption: str, labels: dict) -> list[str]:
  problems = []
  for ev in labels["events"]:
    for attr in ("kind", "waveform", "register", "direction", "color", "quality", "drum",
                 "tempo", "envelope"):
      value = ev[attr]
      if value is not None and not _mentions(caption, CUES[attr][value]):
        problems.append(f"{attr}={value}")
  relation = labels["relation"]
  for other in ("sequence", "overlap"):
    said = _mentions(caption, CUES["relation"][other])
    if other == relation and not said:
      problems.append(f"relation {relation} unsaid")
    if relation == "single" and said:
      problems.append(f"single clip says {other}")
  if relation == "sequence" and _mentions(caption, CUES["relation"]["overlap"]):
    problems.append("sequence clip says overlap")
  pause = any(g["end_s"] - g["start_s"] >= scenes.PAUSE_S for g in labels["gaps"])
  if pause != _mentions(caption, CUES["pause"]):
    problems.append(f"pause={pause}")
  if relation == "single":
    # One event: no word of another value of its attributes may appear.
    ev = labels["events"][0]
    for attr in ("register", "direction", "color", "tempo", "quality", "waveform"):
      for value, cues in CUES[attr].items():
        if ev[attr] is not None and value != ev[attr] and _mentions(caption, cues):
          problems.append(f"{attr}={ev[attr]} but says {value}")
  return problems


def test_captions_name_their_labels(clips):
  failures = []
  for clip in clips:
    captions = [clip.caption] + [synth_captions.describe(clip.labels, np.random.default_rng(k))
                                 for k in range(4)]
    for caption in captions:
      problems = _caption_problems(caption, clip.labels)
      if problems:
        failures.append((clip.seed, caption, problems))
  assert not failures, failures[:5]


def test_single_event_captions_are_precise():
  """Every kind and envelope alone, many wordings: nothing contradicts the labels."""
  rng = np.random.default_rng(0)
  for kind, envelopes in synth_generator.VOCABULARY["envelopes_of"].items():
    for envelope in envelopes:
      for _ in range(6):
        ev = scenes.make_event(rng, 0.1, 3.5, kind=kind, envelope=envelope)
        labels = {"events": [ev], "relation": "single", "gaps": []}
        for k in range(8):
          caption = synth_captions.describe(labels, np.random.default_rng(k))
          assert not _caption_problems(caption, labels), (caption, ev)


def test_captions_vary_for_the_same_attributes():
  ev = _event(2.0, 0, kind="tone", register="high", waveform="sine", envelope="fade_out")
  labels = {"events": [ev], "relation": "single", "gaps": []}
  captions = {synth_captions.describe(labels, np.random.default_rng(k)) for k in range(40)}
  assert len(captions) >= 25
  # The register word itself varies too: the caption is no fixed key for the attributes.
  words = {w for c in captions for w in ("shrill", "piercing", "high-pitched", "treble")
           if w in c.lower()}
  assert len(words) >= 3

  seq = [_event(1.0, 0, kind="chirp", direction="rising"),
         scenes.make_event(np.random.default_rng(1), 1.6, 3.0, kind="noise",
                                    color="brown")]
  labels = {"events": seq, "relation": "sequence", "gaps": [{"start_s": 1.0, "end_s": 1.6}]}
  captions = {synth_captions.describe(labels, np.random.default_rng(k)) for k in range(40)}
  assert len(captions) >= 35


def test_make_event_validates():
  with pytest.raises(ValueError):
    _event(kind="chirp", envelope="staccato")
  with pytest.raises(ValueError):
    _event(kind="tone", colour="white")
  ev = _event(kind="drums", drum="snare", tempo="fast", bpm=180.0)
  assert ev["bpm"] == 180.0 and ev["drum"] == "snare"
  assert math.isclose(ev["onsets_s"][1] - ev["onsets_s"][0], 60 / 180, abs_tol=1e-4)
