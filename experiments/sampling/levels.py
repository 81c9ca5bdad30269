r"""Levels of generated clips under several sampling settings, beside the data's levels.

  python experiments/sampling/levels.py --workdir=demo_out/lm --held_out=8 --seconds=4 \
      --out=experiments/sampling/levels

For the first `--held_out` test captions of the run's data, generates one clip per setting in
`SETTINGS` (same seed), and prints per setting the mean and range over clips of peak and rms
(dBFS) and the fraction of samples beyond full scale, beside the same captions' held-out clips
through the run's tokenizer and vocoder (the path generated audio takes). It also prints how far
the data's normalized latents reach (quantiles over tokens of each token's 99th-percentile |x|),
the scale that an x0 bound must respect. Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations


from absl import flags
import numpy as np

from almtok import audio
from almtok import configlib
from almtok import fileio
from almtok import generate
from almtok import sample
from almtok import state as state_lib
from almtok.latents import store as latents_lib

_WORKDIR = flags.DEFINE_string("workdir", "demo_out/lm", "a training workdir")
_HELD_OUT = flags.DEFINE_integer("held_out", 8, "test captions to generate")
_SECONDS = flags.DEFINE_float("seconds", 4.0, "seconds per clip")
_STEPS = flags.DEFINE_integer("solver_steps", 100, "head steps per token")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")
_OUT = flags.DEFINE_string("out", "experiments/sampling/levels", "output path, no extension")

# (name, SamplerSettings fields). Prediction comes from the run; `data_range` clips each channel
# of x0 to the training latents' range (stats.json), `clip_x0` to +-clip_x0 standard deviations,
# `threshold` scales a row down when its |x0| percentile passes clip_x0.
SETTINGS = (
    ("cfg1 t1.0", dict(cfg=False, cfg_scale=1.0, data_range=False)),
    ("cfg3-linear t1.0", dict(cfg_schedule="linear", data_range=False)),
    ("cfg3-const t1.0", dict(cfg_schedule="constant", data_range=False)),
    ("cfg3-const t0.7", dict(cfg_schedule="constant", temperature=0.7, data_range=False)),
    ("cfg3-const t0.7 clip2", dict(cfg_schedule="constant", temperature=0.7, clip_x0=2.0,
                                   data_range=False)),
    ("cfg3-const t0.7 dyn.99@3", dict(cfg_schedule="constant", temperature=0.7, threshold=0.99,
                                      clip_x0=3.0, data_range=False)),
    ("cfg3-const t1.0 dyn.99@3", dict(cfg_schedule="constant", threshold=0.99, clip_x0=3.0,
                                      data_range=False)),
    ("cfg1 t1.0 range", dict(cfg=False, cfg_scale=1.0)),
    ("cfg3-linear t1.0 range", dict(cfg_schedule="linear")),
    ("cfg3-const t1.0 range", dict(cfg_schedule="constant")),
    ("cfg3-const t0.7 range", dict(cfg_schedule="constant", temperature=0.7)),
    ("cfg3-const t1.0 range dyn.99@3", dict(cfg_schedule="constant", threshold=0.99,
                                            clip_x0=3.0)),
)


def _summary(wavs) -> dict[str, float]:
  lv = [audio.levels(w) for w in wavs]
  peak = np.array([l["peak_db"] for l in lv])
  rms = np.array([l["rms_db"] for l in lv])
  clipped = np.array([l["clipped"] for l in lv])
  return dict(peak_db_mean=float(peak.mean()), peak_db_min=float(peak.min()),
              peak_db_max=float(peak.max()), rms_db_mean=float(rms.mean()),
              rms_db_min=float(rms.min()), rms_db_max=float(rms.max()),
              clipped_mean=float(clipped.mean()), clipped_max=float(clipped.max()),
              clips_clipped=int((clipped > 0).sum()))


def main(argv):
  del argv
  config = state_lib.load_run_config(_WORKDIR.value)
  latents_dir = config["data"]["latents_dir"]
  captions, ref_x, ref_mask = generate.held_out(latents_dir, _HELD_OUT.value)
  rows = {"data (held-out clips through the tokenizer)":
          _summary(generate.reference_audio(_WORKDIR.value, ref_x, ref_mask))}

  # How far the normalized training latents reach: each token's 99th-percentile |x|.
  train = np.concatenate([r.latents for p in latents_lib.shard_paths(latents_dir, "train")
                          for r in latents_lib.read_shard(p)])
  stats = latents_lib.read_stats(latents_dir)
  q99 = np.quantile(np.abs(latents_lib.normalize(train, stats)), 0.99, axis=-1)
  reach = {f"p{p}": float(np.quantile(q99, p / 100)) for p in (50, 90, 99, 100)}
  print("data: per-token 99th-percentile |x| over training tokens: "
        + ", ".join(f"{k} {v:.2f}" for k, v in reach.items()))

  for name, fields in SETTINGS:
    settings = sample.SamplerSettings(solver_steps=_STEPS.value,
                                      **dict(dict(cfg_scale=3.0), **fields))
    wavs, _, _ = generate.generate(_WORKDIR.value, captions, _SECONDS.value, settings,
                                   seed=_SEED.value, progress=False)
    rows[name] = _summary(wavs)
    print(name, rows[name], flush=True)

  lines = [f"Levels of {len(captions)} held-out captions, {_SECONDS.value:g} s each, K = "
           f"{_STEPS.value}, seed {_SEED.value}, run `{_WORKDIR.value}`.", "",
           "| setting | peak dBFS mean (min..max) | rms dBFS mean (min..max) | clips with clipping "
           "| samples beyond full scale (mean, max) |", "|---|---|---|---|---|"]
  for name, r in rows.items():
    lines.append(f"| {name} | {r['peak_db_mean']:+.1f} ({r['peak_db_min']:+.1f}.."
                 f"{r['peak_db_max']:+.1f}) | {r['rms_db_mean']:+.1f} ({r['rms_db_min']:+.1f}.."
                 f"{r['rms_db_max']:+.1f}) | {r['clips_clipped']}/{len(captions)} | "
                 f"{100 * r['clipped_mean']:.1f}%, {100 * r['clipped_max']:.1f}% |")
  lines += ["", "Normalized training latents, each token's 99th-percentile |x|, quantiles over "
            "tokens: " + ", ".join(f"{k} {v:.2f}" for k, v in reach.items())]
  table = "\n".join(lines) + "\n"
  print(table)
  fileio.atomic_json(_OUT.value + ".json", dict(rows=rows, data_reach=reach,
                                                captions=captions), indent=1)
  with fileio.atomic_write(_OUT.value + ".md") as f:
    f.write(table)


if __name__ == "__main__":
  configlib.run(main)
