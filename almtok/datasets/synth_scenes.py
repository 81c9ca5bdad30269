"""What a synthetic clip holds: its sound events, their attributes and timing, drawn from a seed.

`sample_layout` draws the events of a clip and `clip_labels` describes them; `synth_render` turns
them into samples and `synth_captions` into words.

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any

import numpy as np

DEFAULT_SECONDS = 4.0
DEFAULT_SAMPLE_RATE = 16_000
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

EVENT_KEYS = ("kind", "waveform", "register", "direction", "color", "quality", "drum", "tempo",
              "bpm", "envelope", "f0_hz", "f1_hz", "notes_hz", "onsets_s", "start_s", "end_s",
              "gain_db", "background")

_PULSED_KINDS = ("arpeggio", "clicks", "drums")
ENVELOPES_OF = {
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
# Events: attributes and timing.

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
  ev["envelope"] = _pick(rng, fixed, "envelope", ENVELOPES_OF[kind])
  if ev["envelope"] not in ENVELOPES_OF[kind]:
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


def sample_layout(rng: np.random.Generator, seconds: float) -> tuple[list[dict], str]:
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


def clip_labels(events: Sequence[Mapping], relation: str, seconds: float,
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
