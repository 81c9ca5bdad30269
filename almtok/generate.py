r"""Generates audio from captions with a trained model.

  python -m almtok.generate --workdir=/tmp/lm --caption="a rising chirp" --seconds=4 \
      --out=out.wav
  python -m almtok.generate --workdir=/tmp/lm --captions_file=captions.txt --out=outdir/
  python -m almtok.generate --workdir=/tmp/lm --caption="..." --prompt_wav=start.wav \
      --prompt_seconds=1.0 --out=cont.wav

For each caption it writes a WAV, a spectrogram PNG beside it, and one `<out>.json` with the
settings used. The model is the newest checkpoint in --workdir, with its EMA parameters. Bad
arguments (an empty caption, a duration that is not positive or longer than the trained
context, a missing or incompatible checkpoint) stop the program with one line before any model
is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from absl import flags
from absl import logging
import jax
import numpy as np

from almtok import audio
from almtok import configlib
from almtok import plotting
from almtok import sample


def define_flags() -> None:
  """The command line (defined only when run as a program, so that tests can import this)."""
  flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints.")
  flags.DEFINE_string("caption", None, "One caption.")
  flags.DEFINE_string("captions_file", None, "A file with one caption per line.")
  flags.DEFINE_integer("held_out", None, "Use the first N captions of the training data's "
                       "test split (clips the model never saw).")
  flags.DEFINE_float("seconds", 4.0, "Seconds of audio per caption (prompt included).")
  flags.DEFINE_string("out", "out.wav", "Output WAV, or a directory for several captions.")
  flags.DEFINE_integer("steps", 100, "Reverse-diffusion steps per token.")
  flags.DEFINE_enum("sampler", "ddpm", ["ddpm", "ddim"], "Head sampler.")
  flags.DEFINE_float("eta", 0.0, "DDIM noise.")
  flags.DEFINE_float("cfg_scale", 3.0, "Classifier-free guidance scale (1: off).")
  flags.DEFINE_enum("cfg_schedule", "linear", ["constant", "linear"],
                    "Guidance over the clip: constant, or ramping up from 1.")
  flags.DEFINE_float("temperature", 1.0, "Scales the sampling noise.")
  flags.DEFINE_integer("seed", 0, "Random seed.")
  flags.DEFINE_string("prompt_wav", None, "Audio to continue from.")
  flags.DEFINE_float("prompt_seconds", 1.0, "Seconds of the prompt to keep.")


def held_out_captions(latents_dir: str, count: int) -> list[str]:
  """The first `count` captions of a prepared dataset's test split."""
  from almtok.data import pipeline  # pylint: disable=g-import-not-at-top
  batch = next(iter(pipeline.make_dataset(latents_dir, "test", seq_len=1, batch_size=count,
                                          shuffle=False, repeat=False, keep_captions=True,
                                          drop_remainder=False)))
  return [str(c) for c, v in zip(batch["caption"], batch["valid_B"]) if v]


def read_captions(caption: str | None, captions_file: str | None) -> list[str]:
  """The captions to generate, checked: at least one, none empty."""
  if (caption is None) == (captions_file is None):
    raise configlib.ConfigError("give exactly one of --caption, --captions_file and --held_out")
  if caption is not None:
    captions = [caption]
  else:
    if not os.path.exists(captions_file):
      raise configlib.ConfigError(f"--captions_file={captions_file}: no such file")
    with open(captions_file, encoding="utf-8") as f:
      captions = [line.strip() for line in f if line.strip()]
    if not captions:
      raise configlib.ConfigError(f"--captions_file={captions_file}: no captions in it")
  for i, c in enumerate(captions):
    if not c.strip():
      raise configlib.ConfigError(f"caption {i + 1} is empty")
  return [c.strip() for c in captions]


def output_paths(out: str, count: int) -> list[str]:
  """One WAV path per caption: `out` itself for one caption, else numbered files in `out`."""
  if count == 1 and out.endswith(".wav"):
    return [out]
  base = out[:-4] if out.endswith(".wav") else out
  return [os.path.join(base, f"{i:03d}.wav") for i in range(count)]


def load_run_config(workdir: str) -> dict[str, Any]:
  """The training config stored with the checkpoints (without loading any arrays)."""
  if not workdir or not os.path.isdir(workdir):
    raise configlib.ConfigError(f"--workdir={workdir}: no such directory")
  path = os.path.join(workdir, "config.json")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = [d for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
  if not os.path.exists(path) or not steps:
    raise configlib.ConfigError(f"--workdir={workdir}: no finished checkpoint (train first)")
  with open(path) as f:
    return json.load(f)


def check_compatible(config: dict[str, Any], stats: dict[str, Any]) -> None:
  """The checkpoint, its latents' stats and this code must agree; names what does not."""
  from almtok import models  # pylint: disable=g-import-not-at-top
  if config.get("model_name") not in models.NAMES:
    raise configlib.ConfigError(f"checkpoint model_name={config.get('model_name')!r}: this "
                                f"almtok generates from {list(models.NAMES)}")
  token_dim = config["model"]["token_dim"]
  latent_dim = stats["tokenizer"]["latent_dim"]
  if latent_dim != token_dim:
    raise configlib.ConfigError(f"checkpoint token_dim={token_dim} does not match the latents' "
                                f"latent_dim={latent_dim}")


def generate(workdir: str, captions: list[str], seconds: float,
             settings: sample.SamplerSettings, seed: int = 0,
             prompt_wav: np.ndarray | None = None, progress: bool = True
             ) -> tuple[np.ndarray, int, dict[str, Any]]:
  """Waveforms [B, S] for the captions, their sample rate, and the settings used."""
  from almtok import tokenizers  # pylint: disable=g-import-not-at-top
  from almtok.data import pipeline  # pylint: disable=g-import-not-at-top
  from almtok.text.minilm import TextEncoder  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top

  raw = load_run_config(workdir)
  stats = pipeline.load_stats(raw["data"]["latents_dir"])
  check_compatible(raw, stats)
  config = ml_collections.ConfigDict(raw)
  tokenizer = tokenizers.get(stats["tokenizer"]["name"], **stats["tokenizer"]["params"])
  num_tokens = int(round(seconds * tokenizer.frame_rate))
  if num_tokens > config.model.max_len:
    raise configlib.ConfigError(
        f"--seconds={seconds:g}: longer than the trained context of "
        f"{config.model.max_len / tokenizer.frame_rate:g} s")
  from almtok import train  # pylint: disable=g-import-not-at-top
  model = train.load_model(workdir, config, use_ema=True)
  sampler = sample.Sampler(model, train.make_schedule(config), settings)
  text = TextEncoder(max_len=config.model.text_len).encode(captions)
  prompt = None
  if prompt_wav is not None:
    x = np.asarray(tokenizer.encode(prompt_wav[None].astype(np.float32)))
    prompt = np.repeat(pipeline.normalise(x, stats), len(captions), axis=0)
  x = sampler.generate(text, num_tokens, jax.random.PRNGKey(seed), prompt_BxPxC=prompt,
                       progress=progress)
  wav = np.asarray(tokenizer.decode(pipeline.denormalise(x, stats)))
  used = dict(dataclasses.asdict(settings), seed=seed, seconds=seconds, captions=captions,
              workdir=os.path.abspath(workdir), num_tokens=num_tokens,
              prompt_tokens=0 if prompt is None else prompt.shape[1])
  return wav, tokenizer.sample_rate, used


def main(argv):
  del argv
  if flags.FLAGS.seconds <= 0:
    raise configlib.ConfigError(f"--seconds={flags.FLAGS.seconds:g}: must be positive")
  if flags.FLAGS.held_out is not None:
    if flags.FLAGS.caption is not None or flags.FLAGS.captions_file is not None:
      raise configlib.ConfigError("give exactly one of --caption, --captions_file and --held_out")
    if flags.FLAGS.held_out < 1:
      raise configlib.ConfigError(f"--held_out={flags.FLAGS.held_out}: must be >= 1")
    config = load_run_config(flags.FLAGS.workdir)
    captions = held_out_captions(config["data"]["latents_dir"], flags.FLAGS.held_out)
  else:
    captions = read_captions(flags.FLAGS.caption, flags.FLAGS.captions_file)
    config = load_run_config(flags.FLAGS.workdir)
  prompt_wav = None
  if flags.FLAGS.prompt_wav:
    if flags.FLAGS.prompt_seconds <= 0 or flags.FLAGS.prompt_seconds >= flags.FLAGS.seconds:
      raise configlib.ConfigError(f"--prompt_seconds={flags.FLAGS.prompt_seconds:g}: must be in "
                                  f"(0, --seconds)")
    try:
      prompt_wav = audio.load(flags.FLAGS.prompt_wav)
    except audio.AudioError as e:
      raise configlib.ConfigError(f"--prompt_wav={e}") from None
    prompt_wav = prompt_wav[:int(flags.FLAGS.prompt_seconds * audio.SAMPLE_RATE)]
  try:
    settings = sample.SamplerSettings(
        steps=flags.FLAGS.steps, sampler=flags.FLAGS.sampler, eta=flags.FLAGS.eta, cfg=flags.FLAGS.cfg_scale != 1.0,
        cfg_scale=flags.FLAGS.cfg_scale, cfg_schedule=flags.FLAGS.cfg_schedule,
        temperature=flags.FLAGS.temperature, prediction=config["diffusion"]["prediction"])
  except ValueError as e:
    raise configlib.ConfigError(str(e)) from None
  logging.set_verbosity(logging.WARNING)
  wav, rate, used = generate(flags.FLAGS.workdir, captions, flags.FLAGS.seconds, settings, flags.FLAGS.seed,
                             prompt_wav)
  paths = output_paths(flags.FLAGS.out, len(captions))
  for path, w, caption in zip(paths, wav, captions):
    audio.write(path, w, rate)
    plotting.spectrogram_png(path[:-4] + ".png", w, rate, caption)
    print(f"{path}  ({caption})")
  settings_path = (paths[0][:-4] if len(paths) == 1 else os.path.dirname(paths[0])) + ".json"
  with open(settings_path, "w") as f:
    json.dump(dict(used, outputs=paths), f, indent=2)
  print(f"settings: {settings_path}")


if __name__ == "__main__":
  define_flags()
  configlib.run(main)
