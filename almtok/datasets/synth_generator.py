"""Synthetic captioned sounds: almtok's built-in dataset, which needs no download.

Each clip holds one to three sound events (tones, chords, arpeggios, chirps, coloured noise,
clicks and drum hits) that play one after another or on top of each other. A clip has a caption
in plain English and structured labels that say exactly what was rendered, so that an evaluator
can check generated audio against its caption (kind, register, direction, tempo and timing).

Everything here is numpy and depends only on the integer seed: the same seed gives bit-identical
audio, caption and labels. Splits use disjoint ranges of seeds.

Labels (all JSON-serialisable):
  {"events": [event, ...] (sorted by start time), "relation": "single" | "sequence" | "overlap",
   "seconds": float, "sample_rate": int,
   "silences": [{"start_s", "end_s"}, ...]  (stretches at least 50 ms long where nothing sounds),
   "gaps": [{"start_s", "end_s"}, ...]  (silence between consecutive sequential events; a gap of
       at least PAUSE_S seconds is called a pause in the caption)}
An event has every key in EVENT_KEYS; keys that do not apply to its kind are None:
  kind        "tone" | "chord" | "arpeggio" | "chirp" | "noise" | "clicks" | "drums"
  waveform    "sine" | "square" | "saw" (tone, chord, arpeggio, chirp)
  register    "low" | "mid" | "high": the band holding every fundamental (tone, chord, arpeggio)
  direction   "rising" | "falling" (chirp sweep, arpeggio note order)
  color       "white" | "pink" | "brown" (noise: power falls as f^0, f^-1, f^-2)
  quality     "major" | "minor" (chord, arpeggio)
  drum        "kick" | "snare" | "kick_snare" (drums; kick_snare alternates, kick first)
  tempo, bpm  tempo class and beats per minute of pulsed events (arpeggio, clicks, drums, and
              staccato tone, chord or noise): one pulse per beat, onsets at onsets_s
  envelope    "fade_in" | "fade_out" | "staccato" | "sustained"
  f0_hz       tone frequency, chord or arpeggio root, chirp start frequency
  f1_hz       chirp end frequency
  notes_hz    chord notes, or arpeggio notes in the order they are played (then repeated)
  onsets_s    pulse onset times in the clip, spaced by 60 / bpm
  start_s, end_s  where the event sounds; the clip is exactly zero outside all events
  gain_db     peak level of the event on its own, in dB relative to full scale
  background  True for the long event that the others play over in an "overlap" clip

Shape letters: S samples of a clip, N samples of one event, L samples of one pulse.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_SECONDS = 4.0
DEFAULT_SAMPLE_RATE = 16_000
PEAK = 0.95
MIN_SECONDS = 1.0
PAUSE_S = 0.3

KINDS = ("tone", "chord", "arpeggio", "chirp", "noise", "clicks", "drums")
WAVEFORMS = ("sine", "square", "saw")
REGISTERS = {"low": (80.0, 250.0), "mid": (250.0, 1000.0), "high": (1000.0, 4000.0)}
TEMPOS = {"slow": (70, 90), "medium": (100, 130), "fast": (150, 200)}
ENVELOPES = ("fade_in", "fade_out", "staccato", "sustained")
DIRECTIONS = ("rising", "falling")
COLORS = ("white", "pink", "brown")
QUALITIES = ("major", "minor")
DRUMS = ("kick", "snare", "kick_snare")
RELATIONS = ("single", "sequence", "overlap")
CHIRP_LOW_HZ = (150.0, 400.0)     # the low end of every sweep lies here...
CHIRP_HIGH_HZ = (1500.0, 5000.0)  # ...and the high end here, so a sweep spans >= 2 octaves.
FADE_DB = 40.0                    # fades run between -FADE_DB and 0 dB.

EVENT_KEYS = ("kind", "waveform", "register", "direction", "color", "quality", "drum", "tempo",
              "bpm", "envelope", "f0_hz", "f1_hz", "notes_hz", "onsets_s", "start_s", "end_s",
              "gain_db", "background")

_SPLIT_OFFSETS = {"train": 0, "validation": 1 << 40, "test": 2 << 40}
_SPLIT_SPAN = 1 << 40
_PULSED_KINDS = ("arpeggio", "clicks", "drums")
_ENVELOPES_OF = {
    "tone": ENVELOPES, "chord": ENVELOPES, "arpeggio": ENVELOPES, "noise": ENVELOPES,
    "chirp": ("fade_in", "fade_out", "sustained"),
    "clicks": ("fade_in", "fade_out", "sustained"),
    "drums": ("fade_in", "fade_out", "sustained"),
}
_KIND_P = {"tone": 0.2, "chord": 0.12, "arpeggio": 0.12, "chirp": 0.16, "noise": 0.16,
           "clicks": 0.1, "drums": 0.14}
_BACKGROUND_KIND_P = {"tone": 0.25, "chord": 0.15, "arpeggio": 0.1, "noise": 0.25, "clicks": 0.1,
                      "drums": 0.15}
_INTERVALS = {"major": (0, 4, 7), "minor": (0, 3, 7)}
_MAX_HARMONICS = 64

# ----------------------------------------------------------------------------------------------
# Caption words. Every phrase below contains at least one cue of its label value (see _CUES), and
# no phrase contains a cue of another value of the same attribute.

_REGISTER_ADJ = {"low": ["low", "low-pitched", "deep", "bassy"],
                 "mid": ["mid-range", "mid-pitched", "medium-pitched"],
                 "high": ["high", "high-pitched", "shrill", "piercing"]}
_REGISTER_PP = {"low": ["in a low register", "at a low pitch", "in the bass range"],
                "mid": ["in a middle register", "at a medium pitch", "in the mid range"],
                "high": ["in a high register", "at a high pitch", "in the treble range"]}
_WAVE_ADJ = {"sine": ["sine", "sine-wave", "pure", "clean", "smooth"],
             "square": ["square", "square-wave", "hollow", "reedy"],
             "saw": ["sawtooth", "saw-wave", "buzzy", "raspy", "brassy"]}
_TONE_NOUN = {"low": ["tone", "hum", "drone", "note"],
              "mid": ["tone", "note", "beep"],
              "high": ["tone", "beep", "whistle", "whine", "note"]}
_TONE_NOUNS = {"low": ["tones", "notes", "blips"],
               "mid": ["tones", "notes", "beeps", "blips"],
               "high": ["beeps", "tones", "notes", "bleeps", "blips"]}
_CHIRP_NOUN = ["chirp", "sweep", "glide", "siren-like sweep", "pitch sweep"]
_CHORD_NOUN = ["chord", "triad"]
_CHORD_NOUNS = ["chords", "chord stabs"]
_ARP_NOUN = ["arpeggio", "broken chord", "arpeggiated chord"]
_ENV_PRE = {"sustained": ["steady", "sustained", "constant", "continuous", "long"],
            "staccato": ["short", "staccato", "clipped", "brief", "choppy"]}
_ENV_PRE_PULSED = {"sustained": ["steady", "constant"]}
_ENV_POST = {"sustained": ["that stays steady", "held at a constant level", "that is sustained"],
             "fade_in": ["that fades in", "fading in", "that gradually grows louder",
                         "gradually getting louder", "swelling in volume"],
             "fade_out": ["that fades out", "fading out", "fading away",
                          "that gradually dies away", "getting quieter", "trailing off"]}
_ENV_POST_PLURAL = {"sustained": ["that stay steady", "held at a constant level"],
                    "fade_in": ["that fade in", "fading in", "gradually getting louder",
                                "that grow louder"],
                    "fade_out": ["that fade out", "fading out", "fading away", "getting quieter",
                                 "that die away"]}
_TEMPO_ADJ = {"slow": ["slow", "leisurely", "unhurried"],
              "medium": ["moderately paced", "mid-tempo", "medium-paced"],
              "fast": ["fast", "rapid", "quick"]}
_TEMPO_AT = {"slow": ["at a slow pace", "at a leisurely pace", "at a slow tempo"],
             "medium": ["at a moderate pace", "at a medium tempo", "at a moderate tempo"],
             "fast": ["at a fast pace", "at a fast tempo", "in quick succession"]}
_TEMPO_LY = {"slow": ["slowly"], "medium": [], "fast": ["quickly", "rapidly"]}
_DIR_ADJ = {"rising": ["rising", "ascending", "upward"],
            "falling": ["falling", "descending", "downward"]}
_DIR_ING = {"rising": ["sweeping upward", "gliding up", "rising in pitch", "climbing in pitch",
                       "sweeping up"],
            "falling": ["sweeping downward", "gliding down", "falling in pitch",
                        "dropping in pitch", "sweeping down"]}
_DIR_VERB = {"rising": ["that rises in pitch", "that climbs in pitch", "that glides up"],
             "falling": ["that falls in pitch", "that drops in pitch", "that glides down"]}
_DIR_ARP = {"rising": ["going up", "climbing", "ascending"],
            "falling": ["going down", "descending", "falling"]}
# (determiner, core noun phrase) pairs; adjectives go between the two.
_NOISE_NP = {"white": [("", "white noise"), ("a ", "hiss of white noise"), ("", "hissing static"),
                       ("a ", "burst of white noise"), ("", "static"), ("a ", "white noise hiss")],
             "pink": [("", "pink noise"), ("a ", "burst of pink noise"),
                      ("a ", "soft rush of pink noise"), ("a ", "wash of pink noise"),
                      ("", "rushing pink noise")],
             "brown": [("", "brown noise"), ("a ", "burst of brown noise"),
                       ("a ", "rumble of brown noise"), ("", "rumbling brown noise"),
                       ("a ", "brown noise rumble")]}
_NOISE_NPS = {"white": ["bursts of white noise", "white noise bursts", "bursts of static",
                        "hisses of white noise"],
              "pink": ["bursts of pink noise", "pink noise bursts"],
              "brown": ["bursts of brown noise", "brown noise bursts", "rumbles of brown noise"]}
# (determiner, core, plural) triples.
_CLICK_NP = [("", "clicks", True), ("", "ticks", True), ("", "rhythmic clicks", True),
             ("a ", "ticking metronome", False), ("a ", "metronome ticking", False),
             ("", "metronome clicks", True)]
_DRUM_NP = {"kick": [("", "kick drum hits", True), ("", "kick drum thumps", True),
                     ("", "thumping kick drums", True), ("a ", "kick drum", False)],
            "snare": [("", "snare drum hits", True), ("", "snare hits", True),
                      ("", "snare cracks", True), ("a ", "snare drum", False)],
            "kick_snare": [("a ", "drum beat", False), ("a ", "kick and snare beat", False),
                           ("a ", "kick and snare pattern", False),
                           ("", "drums playing a kick and snare pattern", True)]}
_VERB = (["plays", "sounds", "is heard", "can be heard"], ["play", "sound", "are heard",
                                                          "can be heard"])
_BG_VERB = (["plays in the background", "continues in the background", "plays throughout"],
            ["play in the background", "continue in the background", "play throughout"])
_BG_CLAUSE_VERB = (["plays", "sounds", "continues"], ["play", "sound", "continue"])
_SEQ_NP = [" followed by ", ", then ", " and then "]
_SEQ_NP_PAUSE = [" followed by a pause and then ", ", then after a moment of silence, ",
                 ", a pause, then ", " followed by silence and then "]
_SEQ_CLAUSE = [", then ", ", after that ", ", and then ", " and next "]
_SEQ_CLAUSE_PAUSE = [", then after a pause ", ", and after a moment of silence ",
                     ", then after a silent gap ", ", and after a pause "]

# Whole-word caption cues per label value; a cue also matches with a plural "s".
_CUES = {
    "kind": {"tone": ["tone", "hum", "drone", "note", "beep", "bleep", "blip", "whistle",
                      "whine"],
             "chord": ["chord", "triad", "chord stab"],
             "arpeggio": ["arpeggio", "arpeggiated", "broken chord"],
             "chirp": ["chirp", "sweep", "glide", "sweeping", "gliding"],
             "noise": ["noise", "hiss", "hisses", "hissing", "static", "rumble", "rumbling"],
             "clicks": ["click", "clicking", "tick", "ticking", "metronome"],
             "drums": ["drum", "kick", "snare"]},
    "waveform": {"sine": ["sine", "sine-wave", "pure", "clean", "smooth"],
                 "square": ["square", "square-wave", "hollow", "reedy"],
                 "saw": ["sawtooth", "saw-wave", "buzzy", "raspy", "brassy"]},
    "register": {"low": ["low", "low-pitched", "deep", "bassy", "bass"],
                 "mid": ["mid-range", "mid-pitched", "medium-pitched", "middle register",
                         "medium pitch", "mid range"],
                 "high": ["high", "high-pitched", "shrill", "piercing", "treble"]},
    "direction": {"rising": ["rising", "rises", "ascending", "upward", "up", "climbing",
                             "climbs"],
                  "falling": ["falling", "falls", "descending", "downward", "down", "dropping",
                              "drops"]},
    "color": {"white": ["white", "hiss", "hissing", "static"], "pink": ["pink"],
              "brown": ["brown"]},
    "quality": {"major": ["major"], "minor": ["minor"]},
    "drum": {"kick": ["kick"], "snare": ["snare"],
             "kick_snare": ["kick and snare", "drum beat"]},
    "tempo": {"slow": ["slow", "slowly", "leisurely", "unhurried"],
              "medium": ["moderate", "moderately", "medium tempo", "medium-paced", "mid-tempo"],
              "fast": ["fast", "quick", "quickly", "rapid", "rapidly"]},
    "envelope": {"sustained": ["steady", "sustained", "constant", "continuous", "long", "held",
                               "legato"],
                 "staccato": ["short", "staccato", "clipped", "brief", "choppy"],
                 "fade_in": ["fades in", "fade in", "fading in", "grows louder", "grow louder",
                             "getting louder", "swelling"],
                 "fade_out": ["fades out", "fade out", "fading out", "fading away", "dies away",
                              "die away", "getting quieter", "trailing off"]},
    "relation": {"sequence": ["then", "followed by", "after that", "after", "next"],
                 "overlap": ["over", "while", "as", "in the background", "throughout"]},
    "pause": ["pause", "silence", "silent gap"],
}

VOCABULARY: dict[str, Any] = {
    "kinds": list(KINDS),
    "waveforms": list(WAVEFORMS),
    "registers": {k: list(v) for k, v in REGISTERS.items()},
    "directions": list(DIRECTIONS),
    "colors": list(COLORS),
    "qualities": list(QUALITIES),
    "drums": list(DRUMS),
    "tempos": {k: list(v) for k, v in TEMPOS.items()},
    "envelopes": list(ENVELOPES),
    "envelopes_of": {k: list(v) for k, v in _ENVELOPES_OF.items()},
    "relations": list(RELATIONS),
    "chirp_low_hz": list(CHIRP_LOW_HZ),
    "chirp_high_hz": list(CHIRP_HIGH_HZ),
    "event_keys": list(EVENT_KEYS),
    "pause_s": PAUSE_S,
    "cues": _CUES,
}


@dataclasses.dataclass(frozen=True)
class Clip:
  """One rendered clip: float32 mono samples, a caption and the labels it was rendered from."""
  wav: np.ndarray
  caption: str
  labels: dict
  seed: int


# ----------------------------------------------------------------------------------------------
# Seeds and splits.

def split_seeds(split: str, size: int, base_seed: int = 0) -> list[int]:
  """The seeds of a split: `size` consecutive seeds from a range no other split can reach."""
  if split not in _SPLIT_OFFSETS:
    raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_OFFSETS)}")
  if size < 0 or base_seed < 0 or base_seed + size > _SPLIT_SPAN:
    raise ValueError(f"need 0 <= base_seed and base_seed + size <= 2**40, got {base_seed=}, "
                     f"{size=}")
  start = _SPLIT_OFFSETS[split] + base_seed
  return list(range(start, start + size))


def generate(split: str, size: int, seconds: float = DEFAULT_SECONDS,
             sample_rate: int = DEFAULT_SAMPLE_RATE, base_seed: int = 0) -> Iterator[Clip]:
  """Yields the clips of a split, in seed order."""
  for seed in split_seeds(split, size, base_seed):
    yield render_clip(seed, seconds, sample_rate)


def render_clip(seed: int, seconds: float = DEFAULT_SECONDS,
                sample_rate: int = DEFAULT_SAMPLE_RATE) -> Clip:
  """Renders the clip of `seed`: float32 [S] with S = round(seconds * sample_rate)."""
  if seed < 0:
    raise ValueError(f"seed must be non-negative, got {seed}")
  if seconds < MIN_SECONDS:
    raise ValueError(f"clips must last at least {MIN_SECONDS} s, got {seconds}")
  rng = np.random.default_rng(seed)
  events, relation = _sample_layout(rng, float(seconds))
  wav_S, events = mix(events, seconds, sample_rate, seed)
  labels = _clip_labels(events, relation, seconds, sample_rate)
  return Clip(wav=wav_S, caption=describe(labels, rng), labels=labels, seed=int(seed))


# ----------------------------------------------------------------------------------------------
# Events: attributes, timing, rendering.

def make_event(rng: np.random.Generator, start_s: float, end_s: float,
               **fixed: Any) -> dict:
  """An event with the given attributes (any EVENT_KEYS) and the rest drawn from `rng`.

  It sounds from start_s to end_s; a pulsed event ends on a whole number of beats, at most
  end_s when at least one beat fits. Given attributes that do not apply to the kind are ignored.

  Raises:
    ValueError: an unknown key or kind, or an envelope the kind cannot have.
  """
  unknown = set(fixed) - set(EVENT_KEYS)
  if unknown:
    raise ValueError(f"unknown event keys {sorted(unknown)}")
  return _place(_draw_attributes(rng, fixed), start_s, end_s)


def mix(events: Sequence[Mapping], seconds: float, sample_rate: int,
        seed: int) -> tuple[np.ndarray, list[dict]]:
  """Renders events into one clip and scales it so that its peak is at most PEAK.

  Returns (wav float32 [S], the events with gain_db lowered by any scaling), so that the returned
  events re-render to the returned clip. Event i draws its noise from default_rng([seed, i]).
  """
  n_total = int(round(seconds * sample_rate))
  acc_S = np.zeros(n_total, np.float64)
  for i, ev in enumerate(events):
    seg_N = render_event(ev, sample_rate, np.random.default_rng([seed, i]))
    s0 = int(round(ev["start_s"] * sample_rate))
    n = max(0, min(seg_N.size, n_total - s0))
    acc_S[s0:s0 + n] += seg_N[:n]
  peak = float(np.max(np.abs(acc_S))) if n_total else 0.0
  # A hair below PEAK so that rounding to float32 cannot push the peak above it.
  scale = min(1.0, PEAK * (1.0 - 1e-6) / peak) if peak > 0 else 1.0
  out = []
  for ev in events:
    ev = dict(ev)
    if scale < 1.0:
      ev["gain_db"] = float(ev["gain_db"] + 20.0 * math.log10(scale))
    out.append(ev)
  return (acc_S * scale).astype(np.float32), out


def render_event(event: Mapping, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 rng: np.random.Generator | None = None) -> np.ndarray:
  """Renders one event alone: float64 [N] covering start_s..end_s, peak 10**(gain_db / 20).

  The samples taper to zero at both ends. `rng` supplies the noise of noise bursts and snares.
  """
  rng = np.random.default_rng(0) if rng is None else rng
  ev = event
  n = int(round(ev["end_s"] * sample_rate)) - int(round(ev["start_s"] * sample_rate))
  if n <= 0:
    return np.zeros(0, np.float64)
  kind, sr = ev["kind"], sample_rate
  t_N = np.arange(n) / sr
  if kind in ("tone", "chord", "noise"):
    if kind == "noise":
      x_N = _colored_noise(ev["color"], n, sr, rng)
    else:
      notes = [ev["f0_hz"]] if kind == "tone" else ev["notes_hz"]
      x_N = sum(_oscillator(2 * np.pi * f * t_N, f, ev["waveform"], sr) for f in notes)
    if ev["envelope"] == "staccato":
      gate = min(0.12, 0.45 * 60.0 / ev["bpm"])
      x_N = x_N * _pulse_train(ev, n, sr, lambda i, length: _note_shape(length, sr), gate)
  elif kind == "chirp":
    f0, f1, dur = ev["f0_hz"], ev["f1_hz"], n / sr
    ratio = f1 / f0
    freq_N = f0 * ratio ** (t_N / dur)
    phase_N = 2 * np.pi * f0 * dur / math.log(ratio) * (ratio ** (t_N / dur) - 1.0)
    x_N = _oscillator(phase_N, freq_N, ev["waveform"], sr)
  elif kind == "arpeggio":
    beat = 60.0 / ev["bpm"]
    gate = min(0.12, 0.45 * beat) if ev["envelope"] == "staccato" else beat
    notes = ev["notes_hz"]

    def note(i: int, length: int) -> np.ndarray:
      f = notes[i % len(notes)]
      t_L = np.arange(length) / sr
      return _oscillator(2 * np.pi * f * t_L, f, ev["waveform"], sr) * _note_shape(length, sr)
    x_N = _pulse_train(ev, n, sr, note, gate)
  elif kind == "clicks":
    x_N = _pulse_train(ev, n, sr, lambda i, length: _click(length, sr), 0.008)
  elif kind == "drums":
    beat = 60.0 / ev["bpm"]

    def hit(i: int, length: int) -> np.ndarray:
      is_kick = ev["drum"] == "kick" or (ev["drum"] == "kick_snare" and i % 2 == 0)
      return _kick(length, sr) if is_kick else _snare(length, sr, rng)
    x_N = _pulse_train(ev, n, sr, hit, min(0.35, 0.85 * beat))
  else:
    raise ValueError(f"unknown event kind {kind!r}")
  # Pulses shape their own attacks, so a pulse on the first sample keeps its full level.
  x_N = x_N * _level_envelope(ev, n, sr) * _edge_taper(n, sr, 0.0 if is_pulsed(ev) else 0.002)
  peak = float(np.max(np.abs(x_N)))
  if peak == 0.0:
    return x_N
  return x_N * (10.0 ** (ev["gain_db"] / 20.0) / peak)


def is_pulsed(event: Mapping) -> bool:
  """Whether the event is a train of pulses at its bpm (one per beat)."""
  return event["kind"] in _PULSED_KINDS or event["envelope"] == "staccato"


def _pick(rng: np.random.Generator, fixed: Mapping, key: str, options: Sequence,
          p: Sequence[float] | None = None) -> Any:
  if key in fixed:
    return fixed[key]
  if p is not None:
    p = np.asarray(p, np.float64) / np.sum(p)
  return options[int(rng.choice(len(options), p=p))]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
  return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _midi_to_hz(m: float) -> float:
  return 440.0 * 2.0 ** ((m - 69) / 12)


def _hz_to_midi(f: float) -> float:
  return 69 + 12 * math.log2(f / 440.0)


def _draw_attributes(rng: np.random.Generator, fixed: Mapping,
                     background: bool = False, exclude: Sequence[str] = ()) -> dict:
  """Draws every attribute except timing; `fixed` values win and are never redrawn."""
  ev: dict[str, Any] = dict.fromkeys(EVENT_KEYS)
  kind_p = _BACKGROUND_KIND_P if background else _KIND_P
  kinds = [k for k in kind_p if k not in exclude]
  kind = ev["kind"] = _pick(rng, fixed, "kind", kinds, [kind_p[k] for k in kinds])
  if kind not in KINDS:
    raise ValueError(f"unknown event kind {kind!r}")
  if kind in ("tone", "chord", "arpeggio", "chirp"):
    ev["waveform"] = _pick(rng, fixed, "waveform", WAVEFORMS)
  if kind in ("tone", "chord", "arpeggio"):
    ev["register"] = _pick(rng, fixed, "register", list(REGISTERS))
  if kind in ("chord", "arpeggio"):
    ev["quality"] = _pick(rng, fixed, "quality", QUALITIES)
  if kind in ("arpeggio", "chirp"):
    ev["direction"] = _pick(rng, fixed, "direction", DIRECTIONS)
  if kind == "noise":
    ev["color"] = _pick(rng, fixed, "color", COLORS)
  if kind == "drums":
    ev["drum"] = _pick(rng, fixed, "drum", DRUMS)
  ev["envelope"] = _pick(rng, fixed, "envelope", _ENVELOPES_OF[kind])
  if ev["envelope"] not in _ENVELOPES_OF[kind]:
    raise ValueError(f"a {kind} event cannot have envelope {ev['envelope']!r}")
  if is_pulsed(ev):
    ev["tempo"] = _pick(rng, fixed, "tempo", list(TEMPOS))
    lo, hi = TEMPOS[ev["tempo"]]
    ev["bpm"] = float(fixed["bpm"] if "bpm" in fixed else rng.integers(lo, hi + 1))

  if kind == "tone":
    lo, hi = REGISTERS[ev["register"]]
    # Keep clear of the band edges so that the band is unambiguous.
    ev["f0_hz"] = fixed.get("f0_hz") or round(_log_uniform(rng, lo * 1.08, hi / 1.08), 2)
  elif kind in ("chord", "arpeggio"):
    intervals = _INTERVALS[ev["quality"]] + ((12,) if kind == "arpeggio" else ())
    lo, hi = REGISTERS[ev["register"]]
    m_lo = math.ceil(_hz_to_midi(lo * 1.03))
    m_hi = math.floor(_hz_to_midi(hi / 1.03)) - intervals[-1]
    root = (_hz_to_midi(fixed["f0_hz"]) if "f0_hz" in fixed
            else int(rng.integers(m_lo, m_hi + 1)))
    notes = [round(_midi_to_hz(root + iv), 2) for iv in intervals]
    if ev["direction"] == "falling":
      notes = notes[::-1]
    ev["notes_hz"] = fixed.get("notes_hz") or notes
    ev["f0_hz"] = min(ev["notes_hz"])
  elif kind == "chirp":
    low = round(_log_uniform(rng, *CHIRP_LOW_HZ), 2)
    high = round(_log_uniform(rng, *CHIRP_HIGH_HZ), 2)
    f0, f1 = (low, high) if ev["direction"] == "rising" else (high, low)
    ev["f0_hz"], ev["f1_hz"] = fixed.get("f0_hz") or f0, fixed.get("f1_hz") or f1

  gain_lo, gain_hi = (-26.0, -16.0) if background else (-12.0, -3.0)
  ev["gain_db"] = float(fixed["gain_db"] if "gain_db" in fixed
                        else round(rng.uniform(gain_lo, gain_hi), 1))
  ev["background"] = bool(fixed.get("background", background))
  return ev


def _duration_range(ev: Mapping, seconds: float) -> tuple[float, float]:
  """Shortest and longest duration that lets the event show its attributes."""
  if is_pulsed(ev):
    beat = 60.0 / ev["bpm"]
    k_min = 4 if ev["kind"] == "arpeggio" else 3
    return k_min * beat, max(8, 0.5 * seconds / beat) * beat
  longest = max(2.5, 0.6 * seconds)
  if ev["kind"] == "chirp":
    return 0.5, longest
  return (0.8 if ev["envelope"] in ("fade_in", "fade_out") else 0.4), longest


def _place(ev: dict, start_s: float, end_s: float) -> dict:
  ev = dict(ev)
  ev["start_s"] = round(float(start_s), 3)
  if is_pulsed(ev):
    beat = 60.0 / ev["bpm"]
    k = max(1, int(math.floor((end_s - ev["start_s"]) / beat + 1e-9)))
    ev["onsets_s"] = [round(ev["start_s"] + j * beat, 4) for j in range(k)]
    end_s = ev["start_s"] + k * beat
  ev["end_s"] = round(float(end_s), 3)
  return ev


def _sample_layout(rng: np.random.Generator, seconds: float) -> tuple[list[dict], str]:
  relation = _pick(rng, {}, "relation", RELATIONS, [0.3, 0.4, 0.3])
  if relation == "overlap":
    events = _layout_overlap(rng, seconds, n_fg=1 + int(rng.random() < 0.4))
    if events is not None:
      return events, relation
    relation = "sequence"
  if relation == "sequence":
    events = _layout_sequence(rng, 2 + int(rng.random() < 0.4), 0.0, seconds, seconds)
    if events is not None:
      return events, relation
  events = _layout_sequence(rng, 1, 0.0, seconds, seconds)
  if events is None:  # Only very short clips get here: a plain tone always fits.
    ev = _draw_attributes(rng, {"kind": "tone", "envelope": "sustained"})
    events = [_place(ev, 0.1, min(seconds - 0.1, 0.1 + _duration_range(ev, seconds)[1]))]
  return events, "single"


def _layout_sequence(rng: np.random.Generator, n: int, t0: float, t1: float, seconds: float,
                     exclude: Sequence[str] = (), tries: int = 32) -> list[dict] | None:
  """n events one after another inside [t0, t1], or None when none of `tries` draws fit."""
  span = t1 - t0 - 0.05
  for _ in range(tries):
    attrs = [_draw_attributes(rng, {}, exclude=exclude) for _ in range(n)]
    ranges = [_duration_range(a, seconds) for a in attrs]
    # Either a pause that the caption names, or a gap too short to count as one.
    gaps = [rng.uniform(0.35, 0.8) if rng.random() < 0.4 else rng.uniform(0.0, 0.12)
            for _ in range(n - 1)]
    spare = span - sum(lo for lo, _ in ranges) - sum(gaps)
    if spare >= 0:
      break
  else:
    return None
  shares = rng.dirichlet(np.ones(n + 1))  # The last share is left as silence.
  durations = [min(hi, lo + spare * w) for (lo, hi), w in zip(ranges, shares)]
  slack = span - sum(durations) - sum(gaps)
  t = t0 + rng.uniform(0.0, min(slack, 0.4))
  events = []
  for i, (ev, dur) in enumerate(zip(attrs, durations)):
    t = round(t, 3)
    ev = _place(ev, t, t + dur)
    events.append(ev)
    if i < n - 1:
      t = ev["end_s"] + gaps[i]
  return events


def _layout_overlap(rng: np.random.Generator, seconds: float, n_fg: int) -> list[dict] | None:
  """A background event spanning most of the clip with n_fg sequential events over it."""
  for _ in range(8):
    bg = _draw_attributes(rng, {}, background=True)
    start, end = round(rng.uniform(0.0, 0.3), 3), seconds - rng.uniform(0.05, 0.3)
    if end - start < _duration_range(bg, seconds)[0]:
      continue
    bg = _place(bg, start, end)
    for n in (n_fg, 1):
      fg = _layout_sequence(rng, n, bg["start_s"] + 0.3, bg["end_s"], seconds,
                            exclude=(bg["kind"],))
      if fg is not None:
        return [bg] + fg
  return None


def _clip_labels(events: Sequence[Mapping], relation: str, seconds: float,
                 sample_rate: int) -> dict:
  events = sorted((dict(ev) for ev in events), key=lambda ev: ev["start_s"])
  silences, t = [], 0.0
  for ev in events + [{"start_s": float(seconds), "end_s": float(seconds)}]:
    if ev["start_s"] - t >= 0.05:
      silences.append({"start_s": round(t, 3), "end_s": round(ev["start_s"], 3)})
    t = max(t, ev["end_s"])
  seq = [ev for ev in events if not ev["background"]] if relation != "single" else []
  gaps = [{"start_s": a["end_s"], "end_s": b["start_s"]} for a, b in zip(seq, seq[1:])
          if b["start_s"] > a["end_s"]]
  return {"events": events, "relation": relation, "seconds": float(seconds),
          "sample_rate": int(sample_rate), "silences": silences, "gaps": gaps}


# ----------------------------------------------------------------------------------------------
# Signal pieces.

def _oscillator(phase_N: np.ndarray, freq: float | np.ndarray, waveform: str,
                sample_rate: int) -> np.ndarray:
  """Band-limited waveform by additive synthesis; harmonics fade out between 0.40 and 0.45 fs."""
  if waveform == "sine":
    return np.sin(phase_N)
  top = 0.45 * sample_rate
  k_max = int(min(_MAX_HARMONICS, top / max(float(np.min(freq)), 1.0)))
  out_N = np.zeros_like(phase_N)
  for k in range(1, k_max + 1):
    if waveform == "square" and k % 2 == 0:
      continue
    weight = np.clip((top - k * freq) / (0.05 * sample_rate), 0.0, 1.0) / k
    if waveform == "saw" and k % 2 == 0:
      weight = -weight
    out_N += weight * np.sin(k * phase_N)
  return out_N


def _colored_noise(color: str, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
  """Gaussian noise whose power falls as f^-alpha: white 0, pink 1, brown 2 (flat below 20 Hz)."""
  white_N = rng.standard_normal(n)
  if color == "white":
    return white_N
  alpha = {"pink": 1.0, "brown": 2.0}[color]
  freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
  shape = np.maximum(freqs, 20.0) ** (-alpha / 2.0)
  shape[0] = 0.0
  return np.fft.irfft(np.fft.rfft(white_N) * shape, n)


def _ramp(length: int) -> np.ndarray:
  """Raised-cosine rise from exactly 0 towards 1 over `length` samples."""
  return 0.5 - 0.5 * np.cos(np.pi * np.arange(length) / max(length, 1))


def _edge_taper(n: int, sample_rate: int, rise_s: float = 0.002,
                fall_s: float = 0.005) -> np.ndarray:
  env_N = np.ones(n)
  rise, fall = min(n, int(rise_s * sample_rate)), min(n, int(fall_s * sample_rate))
  env_N[:rise] *= _ramp(rise)
  env_N[n - fall:] *= _ramp(fall)[::-1]
  return env_N


def _note_shape(length: int, sample_rate: int) -> np.ndarray:
  """A note or burst: 5 ms attack, flat, 20 ms release (shorter for very short notes)."""
  return _edge_taper(length, sample_rate, min(0.005, 0.2 * length / sample_rate),
                     min(0.02, 0.4 * length / sample_rate))


def _level_envelope(ev: Mapping, n: int, sample_rate: int) -> np.ndarray:
  """Overall loudness curve: fades are linear in dB; continuous sounds get soft edges."""
  u_N = np.arange(n) / max(n - 1, 1)
  if ev["envelope"] == "fade_in":
    env_N = 10.0 ** (FADE_DB * (u_N - 1.0) / 20.0)
  elif ev["envelope"] == "fade_out":
    env_N = 10.0 ** (-FADE_DB * u_N / 20.0)
  else:
    env_N = np.ones(n)
  if not is_pulsed(ev):
    env_N = env_N * _edge_taper(n, sample_rate, 0.02, 0.05)
  return env_N


def _pulse_train(ev: Mapping, n: int, sample_rate: int,
                 pulse: Callable[[int, int], np.ndarray], pulse_s: float) -> np.ndarray:
  """Adds pulse(i, L) at every onset; each pulse is cut at the event end."""
  out_N = np.zeros(n)
  s0 = int(round(ev["start_s"] * sample_rate))
  length = max(1, int(round(pulse_s * sample_rate)))
  for i, onset in enumerate(ev["onsets_s"]):
    a = int(round(onset * sample_rate)) - s0
    m = min(length, n - a)
    if m > 0:
      p_L = pulse(i, length)[:m]
      out_N[a:a + p_L.size] += p_L
  return out_N


def _click(length: int, sample_rate: int) -> np.ndarray:
  t_L = np.arange(length) / sample_rate
  return np.sin(2 * np.pi * 2500.0 * t_L) * np.exp(-t_L / 0.0015)


def _kick(length: int, sample_rate: int) -> np.ndarray:
  """A pitched thump: a sine gliding from 150 Hz down to 50 Hz, decaying."""
  t_L = np.arange(length) / sample_rate
  tau = 0.04
  phase_L = 2 * np.pi * (50.0 * t_L + 100.0 * tau * (1.0 - np.exp(-t_L / tau)))
  decay_L = np.exp(-t_L / (length / sample_rate / 3.5))
  return np.sin(phase_L) * decay_L * _edge_taper(length, sample_rate, 0.001, 0.01)


def _snare(length: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
  """A noise crack (high-passed by differencing) over a short 185 Hz body."""
  length = min(length, int(0.2 * sample_rate))
  t_L = np.arange(length) / sample_rate
  crack_L = np.diff(rng.standard_normal(length + 1)) * np.exp(-t_L / 0.05) / 2.0
  body_L = 0.6 * np.sin(2 * np.pi * 185.0 * t_L) * np.exp(-t_L / 0.03)
  return (crack_L + body_L) * _edge_taper(length, sample_rate, 0.001, 0.01)


# ----------------------------------------------------------------------------------------------
# Captions.

def describe(labels: Mapping, rng: np.random.Generator) -> str:
  """A caption for clip labels; different rngs give different wordings of the same content."""
  events = list(labels["events"])
  relation = labels["relation"]
  if relation == "single":
    np_, plural = _phrase(events[0], rng)
    text = _choice(rng, [np_, _clause(np_, plural, rng), f"the sound of {np_}"])
  elif relation == "sequence":
    text = _sequence_text(events, rng)
  else:
    bg, fg = events[0], events[1:]
    bg_np, bg_plural = _phrase(bg, rng)
    bg_clause = f"{bg_np} {_choice(rng, _BG_CLAUSE_VERB[bg_plural])}"
    if len(fg) == 1:
      fg_np, fg_plural = _phrase(fg[0], rng)
      fg_clause = _clause(fg_np, fg_plural, rng)
    else:
      fg_np = _sequence_text(fg, rng, style="np")
      fg_clause = _sequence_text(fg, rng, style="clause")
    form = int(rng.integers(5))
    if form == 0:
      text = f"{fg_np} over {bg_np}"
    elif form == 1:
      text = f"{fg_clause} while {bg_clause}"
    elif form == 2:
      text = f"{fg_np} with {bg_np} in the background"
    elif form == 3:
      text = f"as {bg_clause}, {fg_clause}"
    else:
      text = f"{bg_np} {_choice(rng, _BG_VERB[bg_plural])} as {fg_clause}"
  text = re.sub(r"\ba (?=[aeiou])", "an ", text)
  return text[0].upper() + text[1:]


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
  return options[int(rng.integers(len(options)))]


def _clause(np_: str, plural: bool, rng: np.random.Generator) -> str:
  return f"{np_} {_choice(rng, _VERB[plural])}"


def _sequence_text(events: Sequence[Mapping], rng: np.random.Generator,
                   style: str | None = None) -> str:
  style = style or _choice(rng, ["np", "clause"])
  parts = []
  for i, ev in enumerate(events):
    np_, plural = _phrase(ev, rng)
    part = np_ if style == "np" else _clause(np_, plural, rng)
    if i > 0:
      pause = ev["start_s"] - events[i - 1]["end_s"] >= PAUSE_S
      if style == "np":
        part = _choice(rng, _SEQ_NP_PAUSE if pause else _SEQ_NP) + part
      else:
        part = _choice(rng, _SEQ_CLAUSE_PAUSE if pause else _SEQ_CLAUSE) + part
    parts.append(part)
  text = "".join(parts)
  if style == "clause" and rng.random() < 0.2:
    text = "first " + text
  return text


def _join(*words: str) -> str:
  return " ".join(w for w in words if w)


def _phrase(ev: Mapping, rng: np.random.Generator) -> tuple[str, bool]:
  """A noun phrase naming every attribute of the event, and whether it is plural."""
  kind = ev["kind"]

  def c(options: Sequence[str]) -> str:
    return _choice(rng, options)

  def coin(p: float = 0.5) -> bool:
    return bool(rng.random() < p)

  env = ev["envelope"]
  if kind in ("tone", "chord") and env == "staccato":
    reg, wave, tempo = ev["register"], ev["waveform"], ev["tempo"]
    if kind == "tone":
      noun = c(_TONE_NOUNS[reg])
    else:
      noun = f"{ev['quality']} {c(_CHORD_NOUNS)}"
    core = (_join(c(_REGISTER_ADJ[reg]), c(_WAVE_ADJ[wave]), noun) if coin(0.7)
            else _join(c(_WAVE_ADJ[wave]), noun, c(_REGISTER_PP[reg])))
    return _pulsed_phrase(core, c(_ENV_PRE["staccato"]), tempo, rng)
  if kind == "noise" and env == "staccato":
    return _pulsed_phrase(c(_NOISE_NPS[ev["color"]]), c(_ENV_PRE["staccato"]), ev["tempo"], rng)

  pre, post = "", ""
  if env == "sustained" and coin(0.75):
    pre = c(_ENV_PRE["sustained"])
  elif env in ("sustained", "fade_in", "fade_out"):
    post = c(_ENV_POST[env])
  if kind == "tone":
    reg, wave = ev["register"], ev["waveform"]
    noun = c(_TONE_NOUN[reg])
    form = int(rng.integers(3))
    if form == 0:
      body = _join(pre, c(_REGISTER_ADJ[reg]), c(_WAVE_ADJ[wave]), noun)
    elif form == 1:
      body = _join(pre, c(_WAVE_ADJ[wave]), noun, c(_REGISTER_PP[reg]))
    else:
      body = _join(pre, c(_REGISTER_ADJ[reg]), noun, f"with a {c(_WAVE_ADJ[wave])} timbre")
    return _join("a", body, post), False
  if kind == "chord":
    reg, wave, quality = ev["register"], ev["waveform"], ev["quality"]
    noun = f"{quality} {c(_CHORD_NOUN)}"
    if coin():
      body = _join(pre, c(_REGISTER_ADJ[reg]), c(_WAVE_ADJ[wave]), noun)
    else:
      body = _join(pre, c(_WAVE_ADJ[wave]), noun, c(_REGISTER_PP[reg]))
    return _join("a", body, post), False
  if kind == "arpeggio":
    reg, wave, quality, tempo = ev["register"], ev["waveform"], ev["quality"], ev["tempo"]
    direction = ev["direction"]
    if env == "staccato":
      pre = c(_ENV_PRE["staccato"])
    elif pre:
      pre = c(["legato", "sustained", "steady"])
    noun = f"{quality} {c(_ARP_NOUN)}"
    if coin():
      body = _join(pre, c(_TEMPO_ADJ[tempo]), c(_DIR_ADJ[direction]), c(_REGISTER_ADJ[reg]),
                   c(_WAVE_ADJ[wave]), noun)
    else:
      tempo_words = c(_TEMPO_AT[tempo] + [f"played {w}" for w in _TEMPO_LY[tempo]])
      body = _join(pre, c(_WAVE_ADJ[wave]), noun, c(_REGISTER_PP[reg]),
                   c(_DIR_ARP[direction]) + ",", tempo_words)
    if post:  # After the tempo words, only a participle reads well: ", fading out".
      post = ", " + c([p for p in _ENV_POST[env] if not p.startswith("that ")])
    return _join("a", body).replace(" ,", ",") + post, False
  if kind == "chirp":
    wave, direction = ev["waveform"], ev["direction"]
    noun = c(_CHIRP_NOUN)
    form = int(rng.integers(3))
    if form == 0:
      body = _join(pre, c(_DIR_ADJ[direction]), c(_WAVE_ADJ[wave]), noun)
    elif form == 1:
      # No "a glide gliding up" or "a sweep sweeping up".
      moves = [m for m in _DIR_ING[direction] if not m.startswith(noun.split()[-1][:4])]
      body = _join(pre, c(_WAVE_ADJ[wave]), noun, c(moves))
    else:
      body = _join(pre, c(_WAVE_ADJ[wave]), noun, c(_DIR_VERB[direction]))
      if post:  # "a sweep that rises in pitch and fades out"
        post = "and " + c([p for p in _ENV_POST[env] if p.startswith("that ")])[len("that "):]
    return _join("a", body, post), False
  if kind == "noise":
    det, core = _NOISE_NP[ev["color"]][int(rng.integers(len(_NOISE_NP[ev["color"]])))]
    return det + _join(pre, core, post), False
  if kind in ("clicks", "drums"):
    table = _CLICK_NP if kind == "clicks" else _DRUM_NP[ev["drum"]]
    det, core, plural = table[int(rng.integers(len(table)))]
    tempo = ev["tempo"]
    pre = c(_ENV_PRE_PULSED["sustained"]) if env == "sustained" and coin(0.6) else ""
    post = c((_ENV_POST_PLURAL if plural else _ENV_POST)[env]) if env != "sustained" or not pre \
        else ""
    if coin():
      text = det + _join(pre, c(_TEMPO_ADJ[tempo]), core, post)
    else:
      text = det + _join(pre, core, c(_TEMPO_AT[tempo]), post)
    return text, plural
  raise ValueError(f"unknown event kind {kind!r}")


def _pulsed_phrase(core: str, staccato: str, tempo: str,
                   rng: np.random.Generator) -> tuple[str, bool]:
  """Plural `core` (e.g. "high sine beeps") made short and repeated at a tempo."""
  form = int(rng.integers(4))
  if form == 0:
    tempo_words = _choice(rng, _TEMPO_AT[tempo] + _TEMPO_LY[tempo])
    return _join(staccato, core, "repeating", tempo_words), True
  if form == 1:
    return _join(_choice(rng, _TEMPO_ADJ[tempo]), staccato, core), True
  if form == 2:
    return _join("a series of", staccato, core, _choice(rng, _TEMPO_AT[tempo])), False
  return f"{core}, {staccato} and {_choice(rng, _TEMPO_ADJ[tempo])}", True
