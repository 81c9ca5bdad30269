r"""Latent preparation: a captioned audio dataset encoded by an audio tokenizer.

  python -m almtok.prepare --config=configs/prepare.py:synth_sounds --workdir=/tmp/synth
  python -m almtok.prepare --config=configs/prepare.py:synth_sounds,size=tiny,seconds=1.0 \
      --workdir=/tmp/synth_tiny
  python -m almtok.prepare --config=configs/prepare.py:debian_sounds,tokenizer=mel \
      --workdir=/tmp/debian
  python -m almtok.prepare --config=configs/prepare.py:audiocaps,tokenizer=mel_vae,\
tokenizer_path=/ckpt/mel_vae.safetensors,audio_dir=/data/audiocaps/audio,csv_dir=/data/audiocaps \
      --workdir=/tmp/audiocaps

The preset names the dataset (synth_sounds, debian_sounds, audiocaps). Args: `tokenizer` (mel,
mel_vae), `tokenizer_path` (mel_vae's safetensors export), `size`, `seconds`, `seed` (the
synth_sounds build, as in configs/synth_sounds.py), `max_seconds` (clips are cut to it),
`audio_dir` and `csv_dir` (audiocaps: `<csv_dir>/{train,val,test}.csv`, each used if it exists).
"""

import os

import ml_collections

from almtok import tokenizers
from configs import common
from configs import synth_sounds

DATASETS = {"synth_sounds": {}, "debian_sounds": {}, "audiocaps": {}}



def _dataset(arg) -> dict:
  if arg.preset == "synth_sounds":
    # The split sizes of configs/synth_sounds.py's size table (its `build_data` run).
    return dict(name="synth_sounds", seconds=arg.seconds, sample_rate=16_000, seed=arg.seed,
                **common.preset(synth_sounds.SIZES, arg.size))
  if arg.preset == "debian_sounds":
    return dict(name="debian_sounds", sample_rate=16_000, max_seconds=arg.max_seconds)
  csvs = {}
  for key, stem in (("train_csv", "train"), ("validation_csv", "val"), ("test_csv", "test")):
    path = os.path.join(arg.csv_dir, f"{stem}.csv") if arg.csv_dir else ""
    csvs[key] = path if path and os.path.exists(os.path.expanduser(path)) else ""
  return dict(name="audiocaps", audio_dir=arg.audio_dir, **csvs)


def get_config(arg=None):
  arg = common.parse_arg(arg, presets=DATASETS, preset="synth_sounds", tokenizer="mel",
                         tokenizer_path="", size="default", seconds=4.0, seed=0,
                         max_seconds=10.0, audio_dir="", csv_dir="")
  config = ml_collections.ConfigDict()
  config.dataset = _dataset(arg)
  config.data_dir = ""  # TFDS datasets; empty: <workdir>/tfds.
  config.tokenizer = dict(name=arg.tokenizer, **tokenizers.spec(arg.tokenizer).params)
  if "path" in config.tokenizer:
    config.tokenizer.path = arg.tokenizer_path
  config.prepare = dict(
      max_seconds=arg.max_seconds,  # Longer clips keep their first max_seconds.
      min_seconds=0.1,
      silence_db=-60.0,             # Peak at or below this (dBFS): skipped as silent.
      bucket_seconds=1.0,           # Clips are padded to a multiple of this for encoding.
      batch_size=16,
      inputs_per_shard=256,
      latent_dtype="float16",
      jit=True,
  )
  config.lock()
  return config
