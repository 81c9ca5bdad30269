r"""Generates audio from captions with a trained run (continuous LM or discrete baseline).

  python -m almtok.generate --workdir=/tmp/lm --caption="a rising chirp" --seconds=4 \
      --out=out.wav
  python -m almtok.generate --workdir=/tmp/lm --captions_file=captions.txt --out=outdir/
  python -m almtok.generate --workdir=/tmp/lm --caption="..." --prompt_wav=start.wav \
      --prompt_seconds=1.0 --out=cont.wav
  python -m almtok.generate --workdir=/tmp/lm --held_out=4 --config.sample.solver_steps=25 \
      --config.sample.cfg_scale=5 --out=outdir/
  python -m almtok.generate --workdir=/tmp/lm --caption="..." --seconds=30 --window_stride=2

Clips longer than the trained context are made by a sliding window (AudioGen's extend): a window
of the context, then windows that keep its newest part as their prompt and add --window_stride
seconds each (default half the context); --nosliding_window makes such a duration an error instead.

Sampling follows the run's own `config.sample` block (what its trainer sampled with);
`--config.sample.KEY=VALUE` changes one setting on top of it.

For each caption it writes a WAV, a spectrogram PNG beside it (on one fixed dB scale), and one
`<out>.json` with the settings used and each clip's levels; it prints each clip's peak and rms
(beside those of the held-out clip through the same tokenizer, with --held_out). WAVs keep the
model's level unless it would clip (then one gain lowers the clip's peak to -1 dBFS, printed and
recorded); --normalize=clip keeps it whatever it is and reports samples beyond full scale.
The model is the newest checkpoint in --workdir, with its EMA parameters; what its head was
trained to predict comes from the run. Bad arguments (an empty caption, a duration under one
token, or longer than the trained context with --nosliding_window, more head steps than training
used, more held-out clips than the test split has, a missing or incompatible checkpoint) stop the
program with one line before any model is loaded and before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np

from almtok import audio
from almtok import configlib
from almtok import fileio
from almtok import inference
from almtok import plotting
from almtok import sample
from almtok import state as state_lib
from almtok import tokenizers
from almtok.latents import pipeline
from almtok.latents import store as latents_lib


def define_flags() -> None:
  """The command line (defined only when run as a program, so that tests can import this)."""
  flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints.")
  flags.DEFINE_string("caption", None, "One caption.")
  flags.DEFINE_string("captions_file", None, "A file with one caption per line.")
  flags.DEFINE_integer("held_out", None, "Use the first N captions of the training data's "
                       "test split (clips the model never saw).")
  flags.DEFINE_float("seconds", 4.0, "Seconds of audio per caption (prompt included).")
  flags.DEFINE_bool("sliding_window", True, "Beyond the trained context, slide a window of the "
                    "context over the clip (AudioGen's extend); --nosliding_window makes that an "
                    "error.")
  flags.DEFINE_float("window_stride", 0.0, "Seconds each window adds (0: half the context).")
  flags.DEFINE_string("out", "out.wav", "Output WAV, or a directory for several captions.")
  # Only the keys given on the command line are used, on top of the run's own config.sample.
  config_flags.DEFINE_config_dict(
      "config", inference.sample_flag_defaults(),
      "--config.sample.KEY=VALUE changes one sampling setting of the run's config.sample "
      "(continuous LM: steps, sampler, eta, cfg_scale, cfg_schedule, temperature, clip_x0, "
      "threshold, data_range; discrete baseline: cfg_scale, cfg_schedule, temperature, top_k, "
      "top_p).")
  flags.DEFINE_integer("seed", 0, "Random seed.")
  flags.DEFINE_string("prompt_wav", None, "Audio to continue from.")
  flags.DEFINE_float("prompt_seconds", 1.0, "Seconds of the prompt to keep.")
  flags.DEFINE_enum("normalize", "limit", ["clip", "limit", "peak", "loudness"],
                    "WAV level: 'limit' keeps the model's level unless the clip would clip, "
                    "then lowers it to -1 dBFS peak; 'clip' never changes it (clipping warns); "
                    "'peak' and 'loudness' apply one gain per clip. The gain is printed and "
                    "recorded in the JSON.")


def held_out(latents_dir: str, count: int) -> tuple[list[str], np.ndarray, np.ndarray]:
  """The first `count` captions of a prepared dataset's test split (clips the model never saw),
  with their normalized latents [B, L, C] and token masks [B, L], for reference."""
  stats = latents_lib.read_stats(latents_dir)
  test = stats.splits.get("test")
  size = test.records if test else 0
  if count > size:
    raise configlib.ConfigError(f"--held_out={count}: the test split of {latents_dir} holds "
                                f"{size} clips")
  seq_len = max(test.max_tokens, 1)
  batch = next(iter(pipeline.make_dataset(latents_dir, "test", seq_len=seq_len, batch_size=count,
                                          shuffle=False, repeat=False, keep_captions=True,
                                          drop_remainder=False, random_crop=False)))
  return ([str(c) for c in batch["caption"]], np.asarray(batch["x_BxLxC"]),
          np.asarray(batch["mask_BxL"]))


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


def generate(workdir: str, captions: list[str], seconds: float,
             settings: sample.SamplerSettings | sample.CodeSamplerSettings, seed: int = 0,
             prompt_wav: np.ndarray | None = None, progress: bool = True,
             sliding_window: bool = True, window_stride: float = 0.0
             ) -> tuple[np.ndarray, int, dict[str, Any]]:
  """Waveforms [B, S] for the captions, their sample rate, and the settings used (one batch of
  captions through `inference.Generator`; beyond the trained context, a sliding window)."""
  generator = inference.Generator(workdir, settings)
  wav, used = generator(captions, seconds, seed, prompt_wav, progress, sliding_window,
                        window_stride)
  return wav, generator.sample_rate, used


def reference_audio(workdir: str, x_BxLxC: np.ndarray, mask_BxL: np.ndarray) -> list[np.ndarray]:
  """Held-out clips as the run's tokenizer and vocoder give them back (the path generated
  audio takes), to set generated levels beside."""
  stats = state_lib.run_stats(workdir)
  tokenizer = tokenizers.from_stats(stats)
  wav = np.asarray(tokenizer.decode(latents_lib.denormalize(x_BxLxC, stats)))
  per_token = wav.shape[1] // x_BxLxC.shape[1]
  return [w[:int(m.sum()) * per_token] for w, m in zip(wav, mask_BxL)]


def run(*, workdir: str, caption: str | None = None, captions_file: str | None = None,
        held_out_count: int | None = None, seconds: float = 4.0, out: str = "out.wav",
        sample_overrides: dict[str, Any] | None = None, seed: int = 0,
        prompt_wav: str | None = None,
        prompt_seconds: float = 1.0, normalize: str = "limit",
        sliding_window: bool = True, window_stride: float = 0.0) -> dict[str, Any]:
  """The command line's work: checks every argument, generates, writes WAV + PNG per caption and
  the settings JSON (each file whole or not at all), prints each clip's levels; returns what
  went into the JSON."""
  if seconds <= 0:
    raise configlib.ConfigError(f"--seconds={seconds:g}: must be positive")
  if normalize not in audio.WRITE_STRATEGIES:
    raise configlib.ConfigError(f"--normalize={normalize}: must be one of "
                                f"{list(audio.WRITE_STRATEGIES)}")
  reference = None
  if held_out_count is not None:
    if caption is not None or captions_file is not None:
      raise configlib.ConfigError("give exactly one of --caption, --captions_file and --held_out")
    if held_out_count < 1:
      raise configlib.ConfigError(f"--held_out={held_out_count}: must be >= 1")
    run_config = state_lib.load_run_config(workdir)
    captions, ref_x, ref_mask = held_out(state_lib.run_latents_dir(workdir), held_out_count)
    reference = (ref_x, ref_mask)
  else:
    captions = read_captions(caption, captions_file)
    run_config = state_lib.load_run_config(workdir)
  wav_prompt = None
  if prompt_wav:
    if prompt_seconds <= 0 or prompt_seconds >= seconds:
      raise configlib.ConfigError(f"--prompt_seconds={prompt_seconds:g}: must be in "
                                  f"(0, --seconds)")
    try:
      wav_prompt = audio.load(prompt_wav)
    except audio.AudioError as e:
      raise configlib.ConfigError(f"--prompt_wav={e}") from None
    wav_prompt = wav_prompt[:int(prompt_seconds * audio.SAMPLE_RATE)]
  settings = inference.run_settings(run_config, sample_overrides, workdir)
  wav, rate, used = generate(workdir, captions, seconds, settings, seed, wav_prompt,
                             sliding_window=sliding_window, window_stride=window_stride)
  paths = output_paths(out, len(captions))
  refs = reference_audio(workdir, *reference) if reference is not None else [None] * len(paths)
  reports = []
  for path, w, caption_i, ref in zip(paths, wav, captions, refs):
    report = audio.write(path, w, rate, strategy=normalize)
    # The picture shows what was written (the line below also gives the model's own level).
    plotting.spectrogram_png(path[:-4] + ".png", w * report.gain, rate, caption_i)
    reports.append(dict(dataclasses.asdict(report),
                        reference=None if ref is None else audio.levels(ref)))
    line = (f"{path}  peak {audio.to_db(report.peak):+.1f} dBFS, rms "
            f"{audio.to_db(report.rms):+.1f} dBFS, {100 * report.clipped:.1f}% clipped")
    if report.gain != 1.0:
      line += (f" (written {report.gain_db:+.1f} dB from the model's level: "
               f"{audio.format_levels(w)})")
    if ref is not None:
      line += f"  | its held-out clip through the tokenizer: {audio.format_levels(ref)}"
    print(f"{line}  ({caption_i})")
  settings_path = (paths[0][:-4] if len(paths) == 1 else os.path.dirname(paths[0])) + ".json"
  if reference is not None:
    # Each generated clip (as written) beside its held-out clip, on one dB scale.
    panels, titles = [], []
    for w, r, report, caption_i in zip(wav, refs, reports, captions):
      panels += [w * report["gain"], r]
      titles += [f"generated: {caption_i}", "held-out clip through the tokenizer"]
    grid = plotting.spectrogram_grid(settings_path[:-5] + "_vs_held_out.png", panels, titles,
                                     rate)
    print(f"generated beside held-out clips: {grid}")
  used = dict(used, outputs=paths, written=reports)
  fileio.atomic_json(settings_path, used, indent=2)
  print(f"settings: {settings_path}")
  return used


def main(argv):
  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  overrides = {k: v for k, v in f.config.sample.items() if f"config.sample.{k}" in f}
  run(workdir=f.workdir, caption=f.caption, captions_file=f.captions_file,
      held_out_count=f.held_out, seconds=f.seconds, out=f.out, sample_overrides=overrides,
      seed=f.seed, prompt_wav=f.prompt_wav, prompt_seconds=f.prompt_seconds,
      sliding_window=f.sliding_window, window_stride=f.window_stride,
      normalize=f.normalize)


if __name__ == "__main__":
  define_flags()
  configlib.run(main)
