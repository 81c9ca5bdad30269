"""Captions and labels of Debian's sample files, derived from their file and folder names.

File and folder names are the only annotation, so captions and labels come from the readable
tables below: a name is split into tokens, runs of tokens are looked up as a sound ("kick drum"),
an adjective ("house"), a form ("loop", "hit") or a musical key ("in C"), and the folder (or the
sonic-pi prefix, or the drum kit) supplies what the name leaves out.

  bd_haus.flac                      -> "a house kick drum"
  lmms basses/bass_acid01.ogg       -> "an acid bass note"
  hydrogen GMRockKit/24Ride-1.wav   -> "a ride cymbal from a rock drum kit"

`debian_catalog` finds the files and splits them; this module only reads names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import os
import re
from typing import NamedTuple

# The packages whose names the tables read (`debian_catalog` says where they install).
SONIC_PI = "sonic-pi-samples"
LMMS = "lmms-common"
HYDROGEN = "hydrogen-data"

CATEGORIES = ("kick", "snare", "hihat", "cymbal", "tom", "percussion", "bass", "synth", "pad",
              "effect", "loop", "instrument", "vocal", "misc")


# ---------------------------------------------------------------------------------------------
# What name tokens mean.
# ---------------------------------------------------------------------------------------------


class Word(NamedTuple):
  """What one token, or a run of tokens, of a file name contributes to the caption.

  kind: "sound" (the thing heard; sets category and noun), "adjective", "style" (an adjective
  said next to the noun: "a soft electronic kick drum"), "form" (the shape of the clip: note,
  hit, loop...) or "key" (a musical key, said as "in C").
  form: for sounds, the form they take unless the name or the folder says otherwise (None: take
  the folder's); for adjectives, a form they imply ("E minor ninth" -> chord).
  """
  kind: str
  text: str
  category: str | None = None
  form: str | None = None


def _sound(category: str, noun: str, form: str | None = "") -> Word:
  return Word("sound", noun, category, form)


def _adj(text: str, form: str | None = None) -> Word:
  return Word("adjective", text, form=form)


def _style(text: str) -> Word:
  return Word("style", text)


def _form(text: str) -> Word:
  return Word("form", text)


_KICK = _sound("kick", "kick drum")
_HAND_CLAP = _sound("percussion", "hand clap")
_RIMSHOT = _sound("snare", "rimshot")
_SIDE_STICK = _sound("snare", "side stick")
_CLAVE = _sound("percussion", "clave", "hit")
_GUITAR = _sound("instrument", "guitar", None)
_CLOSED_HAT = _sound("hihat", "closed hi-hat")
_OPEN_HAT = _sound("hihat", "open hi-hat")
_PEDAL_HAT = _sound("hihat", "pedal hi-hat")

# Keys are runs of lowercase tokens; the longest run wins at each position of a name.
SOUNDS: dict[tuple[str, ...], Word] = {
    # Drum kit.
    ("bd",): _KICK, ("kick",): _KICK, ("bassdrum",): _KICK, ("drum", "bass"): _KICK,
    ("sn",): _sound("snare", "snare drum"), ("snare",): _sound("snare", "snare drum"),
    ("snare", "rim"): _sound("snare", "snare rimshot"),
    ("snare", "rimshot"): _sound("snare", "snare rimshot"),
    ("rim",): _RIMSHOT, ("rimshot",): _RIMSHOT,
    ("sidestick",): _SIDE_STICK, ("side", "stick"): _SIDE_STICK,
    ("drum", "roll"): _sound("snare", "drum roll"),
    ("hihat",): _sound("hihat", "hi-hat"), ("hat",): _sound("hihat", "hi-hat"),
    ("hat", "closed"): _CLOSED_HAT, ("hihat", "closed"): _CLOSED_HAT,
    ("cymbal", "closed"): _CLOSED_HAT,
    ("hat", "open"): _OPEN_HAT, ("hihat", "opened"): _OPEN_HAT, ("cymbal", "open"): _OPEN_HAT,
    ("hat", "pedal"): _PEDAL_HAT, ("hihat", "foot", "pedal"): _PEDAL_HAT,
    ("cymbal", "pedal"): _PEDAL_HAT,
    ("hat", "semi", "open"): _sound("hihat", "half-open hi-hat"),
    ("cymbal",): _sound("cymbal", "cymbal"), ("ride",): _sound("cymbal", "ride cymbal"),
    ("crash",): _sound("cymbal", "crash cymbal"), ("splash",): _sound("cymbal", "splash cymbal"),
    ("tom",): _sound("tom", "tom"), ("tom", "hi"): _sound("tom", "high tom"),
    ("tom", "mid"): _sound("tom", "mid tom"), ("tom", "lo"): _sound("tom", "low tom"),
    ("tom", "low"): _sound("tom", "low tom"), ("tom", "floor"): _sound("tom", "floor tom"),
    # Hand and electronic percussion.
    ("tabla",): _sound("percussion", "tabla", "hit"),
    ("conga",): _sound("percussion", "conga", "hit"),
    ("clave",): _CLAVE, ("clav",): _CLAVE,
    ("wood",): _sound("percussion", "wood block", "hit"),
    ("cowbell",): _sound("percussion", "cowbell"), ("shaker",): _sound("percussion", "shaker"),
    ("clap",): _HAND_CLAP, ("hand", "clap"): _HAND_CLAP,
    ("snap",): _sound("percussion", "finger snap"), ("snaph",): _sound("percussion", "finger snap"),
    ("perc",): _sound("percussion", "percussion", "hit"),
    ("bell",): _sound("percussion", "bell"), ("chime",): _sound("percussion", "chime"),
    ("triangle",): _sound("percussion", "triangle"), ("bong",): _sound("percussion", "bong"),
    ("dong",): _sound("percussion", "dong"),
    ("impact",): _sound("percussion", "impact"), ("tick",): _sound("percussion", "tick"),
    ("pop",): _sound("percussion", "pop"), ("flip",): _sound("percussion", "flick"),
    ("swash",): _sound("percussion", "swash"), ("till",): _sound("percussion", "till bell"),
    ("door",): _sound("percussion", "door knock"),
    ("metronome",): _sound("percussion", "metronome click"),
    ("wind", "chimes"): _sound("percussion", "wind chimes"),
    ("zap",): _sound("percussion", "zap"),
    # Bass.
    ("bass",): _sound("bass", "bass", "note"), ("bassslap",): _sound("bass", "slap bass"),
    ("briff",): _sound("bass", "bass riff"), ("tb", "303"): _sound("bass", "TB-303 bass"),
    # Synths and oscillator shapes.
    ("synth",): _sound("synth", "synth", None), ("pluck",): _sound("synth", "pluck", None),
    ("beep",): _sound("synth", "beep"), ("blip",): _sound("synth", "blip"),
    ("blup",): _sound("synth", "blup"), ("plip",): _sound("synth", "plip"),
    ("twip",): _sound("synth", "twip"), ("ping",): _sound("synth", "ping"),
    ("twang",): _sound("synth", "twang"), ("buzz",): _sound("synth", "buzz"),
    ("sine",): _sound("synth", "sine", None), ("saw",): _sound("synth", "sawtooth", None),
    ("sqr",): _sound("synth", "square", None), ("tri",): _sound("synth", "triangle", None),
    ("halfsine",): _sound("synth", "half-sine", None),
    ("sinesaw",): _sound("synth", "sine-saw", None),
    ("sawsine",): _sound("synth", "saw-sine", None), ("fmsine",): _sound("synth", "FM sine", None),
    ("fmsaw",): _sound("synth", "FM sawtooth", None),
    ("analogsqr",): _sound("synth", "analog square", None),
    ("modsqr",): _sound("synth", "modulated square", None),
    ("angrysaw",): _sound("synth", "harsh sawtooth", None),
    ("invsine",): _sound("synth", "inverted sine", None),
    ("invsineabs",): _sound("synth", "rectified sine", None),
    ("invsinehalf",): _sound("synth", "inverted half-sine", None),
    ("roundsaw",): _sound("synth", "rounded sawtooth", None),
    ("impulse",): _sound("synth", "impulse", None), ("hexagon",): _sound("synth", "hexagon", None),
    ("trancegate",): _sound("synth", "trance gate", None),
    ("technosynth",): _sound("synth", "techno synth", None),
    ("technobass",): _sound("bass", "techno bass", None),
    ("roundbass",): _sound("bass", "round bass", None),
    ("vowel", "a"): _sound("vocal", "'ah' vowel", None),
    ("vowel", "u"): _sound("vocal", "'oo' vowel", None),
    # Pads, drones and textures.
    ("pad",): _sound("pad", "synth", "pad"), ("drone",): _sound("pad", "drone"),
    ("hum",): _sound("pad", "hum"), ("glass", "hum"): _sound("pad", "glass hum"),
    ("glass", "rub"): _sound("pad", "glass rub"),
    ("sauna",): _sound("pad", "sauna atmosphere"),
    ("strings",): _sound("instrument", "string", None),
    ("string",): _sound("instrument", "string", None),
    ("bell", "choir"): _sound("pad", "bell choir", None),
    # Instruments.
    ("piano",): _sound("instrument", "piano", None),
    ("e", "piano"): _sound("instrument", "electric piano", None),
    ("e", "organ"): _sound("instrument", "electric organ", None),
    ("church", "organ"): _sound("instrument", "church organ", None),
    ("harpsichord",): _sound("instrument", "harpsichord", None),
    ("guit",): _GUITAR, ("guitar",): _GUITAR,
    ("steel", "guitar"): _sound("instrument", "steel guitar", None),
    ("cello",): _sound("instrument", "cello", None),
    ("violin",): _sound("instrument", "violin", None),
    ("flute",): _sound("instrument", "flute", None),
    ("trumpet",): _sound("instrument", "trumpet", None),
    ("brass",): _sound("instrument", "brass", None),
    # Voices.
    ("choir",): _sound("vocal", "choir", None), ("chorus",): _sound("vocal", "choir", None),
    ("breath",): _sound("vocal", "breath"), ("burp",): _sound("vocal", "burp"),
    ("robot",): _sound("effect", "robot voice"),
    # Effects.
    ("woosh",): _sound("effect", "whoosh"), ("swoosh",): _sound("effect", "swoosh"),
    ("lunar", "land"): _sound("effect", "lunar landing"),
    ("cineboom",): _sound("effect", "cinematic boom"), ("crow",): _sound("effect", "crow caw"),
    ("phone",): _sound("effect", "phone tone"), ("backspin",): _sound("effect", "backspin"),
    ("hiss",): _sound("effect", "hiss"), ("rewind",): _sound("effect", "rewind"),
    ("scratch",): _sound("effect", "record scratch"), ("explode",): _sound("effect", "explosion"),
    ("filter", "sweep"): _sound("effect", "filter sweep"),
    ("sound", "effect"): _sound("effect", "sound effect"),
    ("start",): _sound("effect", "start-up sound"), ("stop",): _sound("effect", "power-down sound"),
    ("warp",): _sound("effect", "warp"), ("applause",): _sound("effect", "applause"),
    ("raving", "crowd"): _sound("effect", "raving crowd"),
    ("3d", "printer"): _sound("effect", "3D printer", None),
    # Drum patterns.
    ("amen",): _sound("loop", "amen break", None),
    ("breakbeat",): _sound("loop", "breakbeat", None),
    ("break",): _sound("loop", "breakbeat", None), ("beat",): _sound("loop", "drum beat", None),
}

ADJECTIVES: dict[tuple[str, ...], Word] = {
    # Styles and makers.
    ("ambi",): _style("ambient"), ("ambient",): _adj("ambient"), ("elec",): _style("electronic"),
    ("electro",): _adj("electro"), ("electric",): _adj("electric"), ("glitch",): _style("glitchy"),
    ("haus",): _adj("house"), ("house",): _adj("house"), ("klub",): _adj("club"),
    ("tek",): _adj("techno"), ("techno",): _adj("techno"), ("trance",): _adj("trance"),
    ("dnb",): _adj("drum-and-bass"), ("dub",): _adj("dub"), ("jungle",): _adj("jungle"),
    ("rave",): _adj("rave"), ("hiphop",): _adj("hip-hop"), ("hardcore",): _adj("hardcore"),
    ("industrial",): _adj("industrial"), ("latin",): _adj("Latin"), ("acid",): _adj("acid"),
    ("horror",): _adj("horror"), ("safari",): _adj("safari"), ("weirdo",): _adj("weird"),
    ("vinyl",): _adj("vinyl"), ("808",): _adj("808"), ("909",): _adj("909"),
    ("juno",): _adj("Juno"), ("nord",): _adj("Nord"), ("orion",): _adj("Orion"),
    ("korg", "poly", "6"): _adj("Korg Poly-6"), ("matrix", "1000"): _adj("Matrix-1000"),
    ("lfo",): _adj("LFO"), ("moog",): _adj("Moog"), ("chroma",): _adj("Chroma"),
    # Timbre and playing.
    ("acoustic",): _adj("acoustic"), ("distorted",): _adj("distorted"),
    ("dist",): _adj("distorted"), ("heavy", "distorted"): _adj("heavily distorted"),
    ("medium", "distorted"): _adj("moderately distorted"),
    ("slight", "distorted"): _adj("slightly distorted"), ("heavy",): _adj("heavy"),
    ("fat",): _adj("fat"), ("thick",): _adj("thick"), ("boom",): _adj("booming"),
    ("pure",): _adj("pure"), ("punch",): _adj("punchy"), ("nasty",): _adj("nasty"),
    ("harsh",): _adj("harsh"), ("muffled",): _adj("muffled"), ("hollow",): _adj("hollow"),
    ("woodsy",): _adj("woody"), ("voxy",): _adj("vocal-like"), ("filt",): _adj("filtered"),
    ("fuzz",): _adj("fuzzy"), ("dark",): _adj("dark"), ("haunted",): _adj("haunted"),
    ("heaven",): _adj("heavenly"), ("space",): _adj("spacey"), ("metalish",): _adj("metallic"),
    ("fingered",): _adj("fingered"), ("pizzicato",): _adj("pizzicato"),
    ("smooth",): _adj("smooth"), ("inv",): _adj("inverted"), ("angry",): _adj("angry"),
    ("noisy",): _adj("noisy"), ("sharp",): _adj("sharp"), ("analog",): _adj("analog"),
    ("mod",): _adj("modulated"), ("additive",): _adj("additive"), ("addsyn",): _adj("additive"),
    ("full",): _adj("full"), ("short",): _adj("short"), ("long",): _adj("long"),
    ("low",): _adj("low"), ("hi",): _adj("high-pitched"), ("lo",): _adj("low-pitched"),
    ("mid",): _adj("mid-pitched"),
    # How hard the drum was struck (hydrogen velocity layers, sonic-pi hard/soft pairs).
    ("softest",): _adj("very soft"), ("soft",): _adj("soft"), ("med",): _adj("medium"),
    ("hard",): _adj("hard"), ("hardest",): _adj("very hard"),
    # Rhythmic values of the LFO gate shapes.
    ("quarter",): _adj("quarter-note"), ("half",): _adj("half-note"),
    ("whole",): _adj("whole-note"), ("triplet",): _adj("triplet"),
    ("sawdecay",): _adj("saw-decay"), ("sinedecay",): _adj("sine-decay"),
    # Chords.
    ("em", "9"): _adj("E minor ninth", form="chord"),
}

FORMS: dict[tuple[str, ...], Word] = {
    ("loop",): _form("loop"), ("hit",): _form("hit"), ("drop",): _form("drop"),
    ("slide",): _form("slide"), ("harmonics",): _form("harmonics"),
    ("fifths",): _form("power chord"), ("accord",): _form("chord"),
    ("double", "stop"): _form("double stop"), ("wave",): _form("waveform"),
}

KEYS: dict[tuple[str, ...], Word] = {(k,): Word("key", k.upper()) for k in "abcdefg"}

_WORDS: dict[tuple[str, ...], Word] = {**KEYS, **FORMS, **ADJECTIVES, **SOUNDS}
_LONGEST = max(len(k) for k in _WORDS)

# Nouns said without an article.
_MASS_NOUNS = ("applause", "harmonics", "wind chimes")


@dataclasses.dataclass(frozen=True)
class Context:
  """What a folder (lmms), a name prefix (sonic-pi) or a drum kit (hydrogen) adds to a name.

  category: the category when the name names no sound.
  noun: the noun when the name names no sound ("" leaves only the form).
  form: the form for names that give none and whose sound takes the folder's (`Word.form` None).
  fixed: the category is the folder's whatever the name says; in a loop folder, so is the form.
  append: a noun added after the sound's unless it already says it ("synth" -> "synth bass").
  suffix: words after the noun ("from a rock drum kit").
  sounds: token meanings that differ here ("bass" in a drum kit is the bass drum).
  """
  category: str = "misc"
  noun: str = "sound"
  form: str = ""
  fixed: bool = False
  append: str = ""
  suffix: str = ""
  sounds: Mapping[tuple[str, ...], Word] = dataclasses.field(default_factory=dict)


_IN_DRUM_KIT = {("bass",): _KICK, ("bell",): _sound("cymbal", "ride bell")}

LMMS_FOLDERS: dict[str, Context] = {
    "basses": Context("bass", "bass", form="note", fixed=True, append="bass"),
    "bassloops": Context("loop", "bass", form="loop", fixed=True, append="bass"),
    "beats": Context("loop", "drum", form="loop", fixed=True),
    "drums": Context("percussion", "drum", form="hit", sounds={("bass",): _KICK}),
    "effects": Context("effect", "sound effect"),
    "instruments": Context("instrument", "instrument"),
    "latin": Context("instrument", "instrument", form="riff"),
    "misc": Context("misc", "sound"),
    "shapes": Context("synth", "synth", form="waveform", fixed=True),
    "waveforms": Context("synth", "synth", form="waveform", fixed=True),
    "stringsnpads": Context("pad", "", form="pad", fixed=True),
}

SONIC_PI_PREFIXES: dict[str, Context] = {
    "ambi": Context("pad", "", form="pad", fixed=True),
    "drum": Context("percussion", "drum", form="hit", sounds=_IN_DRUM_KIT),
    "elec": Context("percussion", "percussion", form="hit"),
    "glitch": Context("effect", "sound"),
    "guit": Context("instrument", "guitar", form="chord"),
    "loop": Context("loop", "", form="loop", fixed=True),
    "mehackit": Context("effect", "sound"),
    "misc": Context("misc", "sound"),
    "perc": Context("percussion", "percussion", form="hit"),
    "vinyl": Context("effect", "sound"),
}

HYDROGEN_KITS: dict[str, str] = {
    "GMRockKit": "from a rock drum kit",
    "TR808EmulationKit": "from an 808 drum machine",
}


def _kit_context(kit: str) -> Context:
  suffix = HYDROGEN_KITS.get(kit)
  if suffix is None:  # Another kit: name it by its folder, less the words every kit has.
    words = [t for t in name_tokens(kit) if t not in ("gm", "kit", "emulation", "drumkit")]
    suffix = f"from {_with_article(' '.join(words + ['drum kit']))}"
  return Context("percussion", "drum", form="hit", suffix=suffix, sounds=_IN_DRUM_KIT)


def context_for(package: str, relpath: str) -> Context:
  """The context a file's package and folder give its name."""
  parts = relpath.replace(os.sep, "/").split("/")
  if package == LMMS:
    return LMMS_FOLDERS.get(parts[0] if len(parts) > 1 else "", Context())
  if package == HYDROGEN:
    return _kit_context(parts[0]) if len(parts) > 1 else Context("percussion", "drum", "hit")
  tokens = name_tokens(_stem(parts[-1]))
  return SONIC_PI_PREFIXES.get(tokens[0] if tokens else "", Context())


# ---------------------------------------------------------------------------------------------
# Captions and labels.
# ---------------------------------------------------------------------------------------------


def name_tokens(name: str) -> list[str]:
  """Lowercase tokens of a file or folder name: 'HatSemiOpen-Hard' -> [hat, semi, open, hard]."""
  name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", name)  # GMRockKit -> GM RockKit
  name = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)  # RockKit -> Rock Kit
  # Letters and digits part ('909beat' -> 909 beat), except for words that are both ('3d').
  return re.findall(r"3d|[a-z]+|\d+", name.lower())


@dataclasses.dataclass(frozen=True)
class Description:
  """What a file name says: the caption, a category of `CATEGORIES`, the instrument noun."""
  caption: str
  category: str
  instrument: str
  tokens: tuple[str, ...]


def describe(package: str, relpath: str) -> Description:
  """Caption, category and instrument of the file at `relpath` under its package's root."""
  context = context_for(package, relpath)
  tokens = name_tokens(_stem(os.path.basename(relpath)))
  words, used = _match(tokens, context.sounds)

  sounds = [w for w in words if w.kind == "sound"]
  sound = sounds[-1] if sounds else None  # The head of a compound name comes last.
  adjectives = [w.text for w in words if w.kind == "adjective"]
  adjectives += [w.text for w in words if w.kind == "style"]
  forms = [w.text for w in words if w.kind == "form"]
  forms += [w.form for w in words if w.kind == "adjective" and w.form]
  keys = [w.text for w in words if w.kind == "key"]

  if context.fixed and context.form == "loop":
    form = "loop"  # A loop folder's files are loops whatever their names say.
  elif forms:
    form = forms[0]
  elif sound is not None and sound.form is not None:
    form = sound.form
  else:
    form = context.form

  if context.fixed:
    category = context.category
  elif form == "loop":
    category = "loop"
  else:
    category = sound.category if sound is not None else context.category

  if sound is not None:
    noun = sound.text
  else:  # The folder's noun, unless the name says what the clip is ("hit02" -> "a hit").
    noun = context.noun if context.fixed or not forms else ""
  if context.append and context.append not in noun.split():
    noun = f"{noun} {context.append}".strip()
  if form in noun.split():
    form = ""  # "a drum beat loop", never "a synth pad pad".

  # A word the suffix already says is not repeated before the noun ("an 808 ... 808 machine").
  adjectives = [a for a in adjectives if a not in context.suffix.split()]
  phrase = " ".join(w for w in (*_dedupe(adjectives), noun, form) if w) or "sound"
  phrase = phrase if phrase.endswith(_MASS_NOUNS) else _with_article(phrase)
  if keys:
    phrase += f" in {keys[-1]}"
  if context.suffix:
    phrase += f" {context.suffix}"

  kept = tuple(t for t in tokens if not t.isdigit() or t in used)  # Drop take numbers ("01").
  return Description(caption=phrase, category=category, instrument=noun or form or "sound",
                     tokens=kept)


def _match(tokens: Sequence[str],
           overrides: Mapping[tuple[str, ...], Word]) -> tuple[list[Word], set[str]]:
  """Greedy left-to-right lookup of the longest known run of tokens."""
  words, used, i = [], set(), 0
  while i < len(tokens):
    for n in range(min(_LONGEST, len(tokens) - i), 0, -1):
      run = tuple(tokens[i:i + n])
      word = overrides.get(run) or _WORDS.get(run)
      if word is not None:
        words.append(word)
        used.update(run)
        i += n
        break
    else:
      i += 1
  return words, used


# Words that start with a vowel sound but not a vowel letter ("an 808", "an FM sine").
_SAID_WITH_AN = ("8", "11", "18", "fm", "lfo")


def _with_article(phrase: str) -> str:
  first = phrase.split()[0].lower().strip("'")
  vowel_sound = first[0] in "aeiou" or first.startswith(_SAID_WITH_AN)
  return f"{'an' if vowel_sound else 'a'} {phrase}"


def _dedupe(words: Sequence[str]) -> list[str]:
  return list(dict.fromkeys(words))


def _stem(filename: str) -> str:
  return os.path.splitext(filename)[0]
