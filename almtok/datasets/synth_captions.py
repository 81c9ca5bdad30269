"""Captions of synthetic clips: plain English from a clip's labels, with cue words a checker can
match.

`describe(labels, rng)` words the events of `synth_scenes.clip_labels` in one of many ways; every
phrase it uses holds a cue of each attribute it names (`CUES`) and no cue of another value of that
attribute, so that a caption can be checked against its labels word by word.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import re

import numpy as np

from almtok.datasets import synth_scenes as scenes

# ----------------------------------------------------------------------------------------------
# Caption words. Every phrase below contains at least one cue of its label value (see CUES), and
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
CUES = {
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
      pause = ev["start_s"] - events[i - 1]["end_s"] >= scenes.PAUSE_S
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
