r"""Reconstruction quality of the `mel` and `mel_vae` tokenizers on held-out clips.

  .venv/bin/python experiments/tokenizers/reconstruction.py --mel_vae=runs/mel_vae \
      --data_dir=runs/mel_vae/tfds --out=experiments/tokenizers

Clips: the synth_sounds `test` split (4 s, the build that configs/mel_vae.py trains on) and the
debian_sounds `test` split (0.03-10 s). For each clip, M is its log-mel in dB (S // 160 frames,
as the tokenizers see it) and M̂ the reconstruction over the frames that fill whole tokens:

  mel domain:  M̂ = decode_mel(encode_mel(M));
  waveform:    M̂ = log-mel of vocoder(decode_mel(encode(wav))) (Griffin-Lim), read back
               with `audio.log_mel` (final centred frame dropped);

mel SNR = 10·log10(Σ(M − mean M)² / Σ(M − M̂)²) per clip, and L1 = mean |M − M̂| in dB; the
table gives means (and medians) over clips. The waveform trip runs on the first
`--wave_clips` clips of each split (Griffin-Lim takes about a second per 4 s clip here).
Writes results.json and reconstruction.png (original vs reconstructed spectrograms) to --out.

Shape letters: B batch, S samples, M mel bins, F frames, T tokens, C token channels.
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from almtok import audio
from almtok import tokenizers
from almtok.tokenizers import melspec
from almtok.tokenizers import vocoder as vocoder_lib

_MEL_VAE = flags.DEFINE_string("mel_vae", None,
                               "Directory with mel_vae.safetensors + mel_vae.json.",
                               required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir.", required=True)
_OUT = flags.DEFINE_string("out", os.path.dirname(os.path.abspath(__file__)), "Output folder.")
_WAVE_CLIPS = flags.DEFINE_integer("wave_clips", 50, "Clips per split for the waveform trip.")
_GL_ITERS = flags.DEFINE_integer("gl_iters", 32, "Griffin-Lim iterations.")
_MAX_CLIPS = flags.DEFINE_integer("max_clips", 0, "Clips per split (0: all).")


def snr_db(mel_MxF: np.ndarray, mel_hat_MxF: np.ndarray) -> float:
  """Mel SNR of one clip in dB (`melspec.mel_snr_db` on a batch of one)."""
  return float(melspec.mel_snr_db(mel_MxF[None], mel_hat_MxF[None])[0])


def load_test_clips(data_dir: str, max_clips: int) -> dict[str, list[np.ndarray]]:
  """{dataset: [waveform S]} of the two test splits."""
  from almtok.datasets import registry as datasets  # pylint: disable=g-import-not-at-top
  from configs import mel_vae as mel_vae_config  # pylint: disable=g-import-not-at-top
  config = mel_vae_config.get_config("default")
  clips = {}
  for name, dataset in (("synth_sounds", config.synth), ("debian_sounds", config.debian)):
    source = datasets.build(dataset, data_dir).as_data_source()["test"]
    n = len(source) if not max_clips else min(max_clips, len(source))
    clips[name] = [np.asarray(source[i]["audio"], np.float32) for i in range(n)]
  return clips


def evaluate(tokenizer, wavs: list[np.ndarray], wave_clips: int) -> tuple[dict, list[dict]]:
  """Summary metrics and per-clip records (with mels for plotting) for one tokenizer."""
  per_clip, skipped = [], 0
  group = tokenizer.group
  # Clips of equal length are encoded together (one compilation per length).
  by_length: dict[int, list[int]] = {}
  for i, wav in enumerate(wavs):
    by_length.setdefault(len(wav), []).append(i)
  records: dict[int, dict] = {}
  for length, idx in by_length.items():
    frames = (length // audio.HOP_LENGTH) // group * group
    if frames == 0:
      skipped += len(idx)
      continue
    for start in range(0, len(idx), 25):
      chunk = idx[start:start + 25]
      mel_BxMxF = np.asarray(tokenizer.mel(np.stack([wavs[i] for i in chunk])))
      x_BxTxC = tokenizer.encode_mel(mel_BxMxF)
      mel_hat_BxMxF = np.asarray(tokenizer.decode_mel(x_BxTxC))
      for i, mel_MxF, mel_hat_MxF in zip(chunk, mel_BxMxF, mel_hat_BxMxF):
        mel_MxF = mel_MxF[:, :frames]
        records[i] = dict(mel=mel_MxF, mel_hat=mel_hat_MxF,
                          mel_snr_db=snr_db(mel_MxF, mel_hat_MxF),
                          mel_l1_db=float(np.mean(np.abs(mel_MxF - mel_hat_MxF))))
  done = sorted(records)
  for i in done[:wave_clips]:
    rec = records[i]
    wav_hat_S = tokenizer.vocoder.mel_to_wav(rec["mel_hat"][None])[0]
    wave_mel_MxF = audio.log_mel(wav_hat_S)[:, :-1]
    rec.update(wave_mel=wave_mel_MxF, wave_snr_db=snr_db(rec["mel"], wave_mel_MxF),
               wave_l1_db=float(np.mean(np.abs(rec["mel"] - wave_mel_MxF))))
  per_clip = [records[i] for i in done]

  def stats(key: str) -> dict[str, float | None]:
    values = np.array([r[key] for r in per_clip if key in r], np.float64)
    if not values.size:
      return dict(mean=None, median=None)
    if np.all(np.isinf(values)):
      return dict(mean=None, median=None, exact=True)
    return dict(mean=round(float(np.mean(values)), 3), median=round(float(np.median(values)), 3))

  summary = dict(clips=len(per_clip), skipped_too_short=skipped,
                 wave_clips=sum("wave_snr_db" in r for r in per_clip),
                 mel_snr_db=stats("mel_snr_db"), mel_l1_db=stats("mel_l1_db"),
                 wave_snr_db=stats("wave_snr_db"), wave_l1_db=stats("wave_l1_db"))
  return summary, per_clip


def _fmt(stat: dict) -> str:
  if stat.get("exact"):
    return "exact"
  return "-" if stat["mean"] is None else f"{stat['mean']:.2f} ({stat['median']:.2f})"


def print_table(results: dict) -> str:
  lines = ["| tokenizer | test split | clips | mel SNR dB | mel L1 dB | wave clips | "
           "wave SNR dB | wave L1 dB |", "|---|---|---|---|---|---|---|---|"]
  for tok, per_set in results["tokenizers"].items():
    for name, s in per_set.items():
      lines.append(f"| {tok} | {name} | {s['clips']} | {_fmt(s['mel_snr_db'])} | "
                   f"{_fmt(s['mel_l1_db'])} | {s['wave_clips']} | {_fmt(s['wave_snr_db'])} | "
                   f"{_fmt(s['wave_l1_db'])} |")
  table = "\n".join(lines)
  print(table)
  return table


def plot(path: str, examples: list[tuple[str, dict, dict]]) -> None:
  """Rows: clips; columns: original, mel_vae (mel domain), mel_vae and mel after Griffin-Lim."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  columns = [("original log-mel", lambda v, m: v["mel"]),
             ("mel_vae: decoded mel", lambda v, m: v["mel_hat"]),
             ("mel_vae -> Griffin-Lim -> log-mel", lambda v, m: v.get("wave_mel")),
             ("mel -> Griffin-Lim -> log-mel", lambda v, m: m.get("wave_mel"))]
  fig, axes = plt.subplots(len(examples), len(columns), figsize=(16, 2.4 * len(examples)),
                           squeeze=False)
  for row, (title, vae, mel) in enumerate(examples):
    top = float(vae["mel"].max())
    for col, (name, get) in enumerate(columns):
      ax = axes[row, col]
      image = get(vae, mel)
      if image is None:
        ax.axis("off")
        continue
      ax.imshow(image, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                interpolation="nearest")
      snr = snr_db(vae["mel"], image) if col else None
      ax.set_title(f"{title}: {name}" + (f" ({snr:.1f} dB)" if snr is not None else ""),
                   fontsize=8)
      ax.set_xticks([])
      ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  os.makedirs(_OUT.value, exist_ok=True)
  clips = load_test_clips(_DATA_DIR.value, _MAX_CLIPS.value)
  gl = vocoder_lib.GriffinLim(n_iter=_GL_ITERS.value)
  toks = {"mel": tokenizers.get("mel", vocoder=gl),
          "mel_vae": tokenizers.get("mel_vae", path=_MEL_VAE.value, vocoder=gl)}
  with open(os.path.join(_MEL_VAE.value, "mel_vae.json")) as f:
    description = json.load(f)
  results = dict(
      mel_vae=dict(path=os.path.abspath(_MEL_VAE.value), model=description["model"],
                   trained_steps=description.get("trained_steps"),
                   train_seconds=description.get("train_seconds"),
                   kl_weight=description.get("kl_weight")),
      griffin_lim_iters=_GL_ITERS.value, wave_clips_per_split=_WAVE_CLIPS.value,
      tokenizers={}, seconds_taken={})
  per_clip = {}
  for tok_name, tok in toks.items():
    results["tokenizers"][tok_name] = {}
    for set_name, wavs in clips.items():
      t0 = time.perf_counter()
      summary, records = evaluate(tok, wavs, _WAVE_CLIPS.value)
      results["tokenizers"][tok_name][set_name] = summary
      results["seconds_taken"][f"{tok_name}/{set_name}"] = round(time.perf_counter() - t0, 1)
      per_clip[(tok_name, set_name)] = records
  table = print_table(results)
  results["table"] = table
  print(f"mel_vae: {results['mel_vae']['trained_steps']} steps in "
        f"{results['mel_vae']['train_seconds']} s of training")
  with open(os.path.join(_OUT.value, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  examples = []
  for set_name in clips:
    vae_records, mel_records = per_clip[("mel_vae", set_name)], per_clip[("mel", set_name)]
    for k in (0, 1):
      if k < len(vae_records):
        examples.append((f"{set_name} #{k}", vae_records[k], mel_records[k]))
  plot(os.path.join(_OUT.value, "reconstruction.png"), examples)
  print(f"wrote {_OUT.value}/results.json and reconstruction.png")


if __name__ == "__main__":
  app.run(main)
