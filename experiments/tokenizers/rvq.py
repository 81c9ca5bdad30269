r"""Quantization error of residual VQ over prepared latents: relative MSE and mel SNR.

  .venv/bin/python -m almtok.prepare --config=configs/prepare.py:synth_sounds,size=small \
      --workdir=runs/prep_synth_small_mel
  .venv/bin/python experiments/tokenizers/rvq.py \
      --latents_dir=runs/prep_synth_small_mel/latents --fits=4x256,8x1024 \
      --out=runs/rvq_synth_small_mel

Each `QxK` in --fits is one fit (`almtok.quantizers.rvq.fit`) of Q stages of K codes on
--num_vectors train-split vectors (all of them when the split has fewer), --iters Lloyd
iterations per stage. Fitting is greedy, stage by stage, so the first q < Q stages of a fit are
the q-stage quantizer that a fit with the same draws would give: every prefix is reported.

On the --split clips (held out), with x the normalized latents and x̂ = decode(encode(x)):

  relative MSE  Σ||x − x̂||² / Σ||x||² over all tokens;
  mel SNR       10·log10(Σ(M − m̄)² / Σ(M − M̂)²) per clip, with
                M = decode_mel(denormalize(x)) (for `mel`, the stored frames unstacked: the
                clip's log-mel in dB), M̂ = decode_mel(denormalize(x̂)), m̄ the mean of M;
                mean and median over clips. For `mel_vae` both go through the VAE decoder,
                so the SNR measures what quantizing adds to the VAE's own reconstruction;
  code use      per stage, the perplexity exp(H) of the codes and the share of codes used.

With --audio_snr (a lossy tokenizer such as `mel_vae`), both the unquantised latents and every
prefix are also decoded against the clip's original log-mel (`audio.log_mel` of the dataset's
waveform, read by id from the TFDS data beside the latents or in --data_dir): the tokenizer's
own ceiling and the RVQ's side by side, on one reference. `--rule_db` then names the smallest
Q within that many dB of the unquantised latents' SNR (mean over clips).

Writes results.json to --out and prints a markdown table.

Shape letters: B clips, T tokens, C latent channels, Q stages, K codes, M mel bins, F frames.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from almtok import tokenizers
from almtok.latents import store as latents_lib
from almtok.quantizers import rvq as rvq_lib

_LATENTS_DIR = flags.DEFINE_string("latents_dir", "runs/prep_synth_small_mel/latents",
                                   "A prepared dataset's latents folder.")
_TOKENIZER_PATH = flags.DEFINE_string("tokenizer_path", "",
                                      "mel_vae: the export directory (mel_vae.safetensors).")
_FITS = flags.DEFINE_list("fits", ["4x256", "8x1024"], "QxK fits; every prefix is reported.")
_NUM_VECTORS = flags.DEFINE_integer("num_vectors", 50_000, "Train vectors k-means sees.")
_ITERS = flags.DEFINE_integer("iters", 20, "Lloyd iterations per stage.")
_INIT = flags.DEFINE_enum("init", "kmeans++", list(rvq_lib.INITS), "k-means initialisation.")
_SEED = flags.DEFINE_integer("seed", 0, "Sample and k-means draws.")
_SPLIT = flags.DEFINE_string("split", "test", "Held-out split.")
_OUT = flags.DEFINE_string("out", "", "Folder for results.json (empty: print only).")
_AUDIO_SNR = flags.DEFINE_bool("audio_snr", False, "Also the mel SNR against the original "
                               "audio's log-mel, for the unquantised latents and every prefix.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data of the prepared dataset (empty: "
                                "<latents_dir>/../tfds).")
_RULE_DB = flags.DEFINE_float("rule_db", 1.0, "With --audio_snr: choose the smallest Q whose "
                              "SNR is within this many dB of the unquantised latents'.")


def snr_db(mel_MxF: np.ndarray, mel_hat_MxF: np.ndarray) -> float:
  """Mel SNR of one clip in dB (inf for an exact reconstruction)."""
  mel_MxF = mel_MxF.astype(np.float64)
  noise = np.sum(np.square(mel_MxF - mel_hat_MxF))
  signal = np.sum(np.square(mel_MxF - mel_MxF.mean()))
  return float("inf") if noise == 0 else float(10 * np.log10(signal / noise))


def code_use(codes_NxQ: np.ndarray, k: int) -> tuple[list[float], list[float]]:
  """(perplexity, share of the K codes used) per stage."""
  perplexity, used = [], []
  for q in range(codes_NxQ.shape[1]):
    p_K = np.bincount(codes_NxQ[:, q], minlength=k) / codes_NxQ.shape[0]
    nz = p_K[p_K > 0]
    perplexity.append(float(np.exp(-np.sum(nz * np.log(nz)))))
    used.append(float(nz.size / k))
  return perplexity, used


def audio_mels(stats: latents_lib.Stats, clips: list[latents_lib.LatentRecord]
               ) -> list[np.ndarray]:
  """The original log-mel [M, F] of each clip, from its waveform in the prepared dataset."""
  from almtok import audio  # pylint: disable=g-import-not-at-top
  from almtok.datasets import registry  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  data_dir = _DATA_DIR.value or os.path.join(os.path.dirname(_LATENTS_DIR.value), "tfds")
  if not os.path.isdir(data_dir):
    raise ValueError(f"--data_dir={data_dir}: no such folder (the prepared dataset's TFDS data)")
  source = registry.build(ml_collections.ConfigDict(stats.dataset), data_dir).as_data_source()
  split = source[_SPLIT.value]
  wanted = {c.id for c in clips}
  by_id = {}
  for i in range(len(split)):
    row = split[i]
    key = row["id"].decode() if isinstance(row["id"], bytes) else str(row["id"])
    if key in wanted:
      by_id[key] = audio.log_mel(np.asarray(row["audio"], np.float32))
  missing = wanted - set(by_id)
  if missing:
    raise ValueError(f"{data_dir}: no audio for {len(missing)} clips (e.g. {sorted(missing)[0]})")
  return [by_id[c.id] for c in clips]


def audio_snr(ref_MxF: np.ndarray, mel_hat_MxF: np.ndarray) -> float:
  """`snr_db` on the frames both have (a tokenizer may pad the last token's frames)."""
  f = min(ref_MxF.shape[1], mel_hat_MxF.shape[1])
  return snr_db(ref_MxF[:, :f], mel_hat_MxF[:, :f])


def make_tokenizer(stats: latents_lib.Stats) -> tokenizers.AudioTokenizer:
  name = stats.tokenizer.name
  params = dict(stats.tokenizer.params)
  if name == "mel_vae":
    params = {"path": _TOKENIZER_PATH.value or params.get("path", "")}
  return tokenizers.get(name, **params)


def evaluate(quantizer: rvq_lib.RVQ, clips: list[latents_lib.LatentRecord],
             raw: list[latents_lib.LatentRecord], stats: latents_lib.Stats,
             tokenizer: tokenizers.AudioTokenizer,
             originals: list[np.ndarray] | None = None) -> list[dict]:
  """One row per stage prefix q = 1..Q: relative MSE, mel SNR (also against `originals`, the
  audio's log-mels, when given) and code use on `clips`."""
  encode = jax.jit(rvq_lib.RVQ.encode)
  decode = jax.jit(rvq_lib.RVQ.decode)
  codes = [np.asarray(encode(quantizer, jnp.asarray(c.latents[None]))[0]) for c in clips]
  perplexity, used = code_use(np.concatenate(codes), quantizer.k)
  # For `mel` the reference is the stored frames themselves; other tokenizers decode them.
  identity = stats.tokenizer.name == "mel"
  refs = [np.asarray(tokenizer.decode_mel(jnp.asarray(
      r.latents if identity else latents_lib.denormalize(c.latents, stats))[None]))[0]
          for c, r in zip(clips, raw)]
  rows = []
  for q in range(1, quantizer.n_q + 1):
    err = norm = 0.0
    snrs, vs_audio = [], []
    for i, (c, codes_TxQ, ref_MxF) in enumerate(zip(clips, codes, refs)):
      x_hat_TxC = np.asarray(decode(quantizer, jnp.asarray(codes_TxQ[None, :, :q]))[0])
      err += float(np.sum(np.square(c.latents.astype(np.float64) - x_hat_TxC)))
      norm += float(np.sum(np.square(c.latents.astype(np.float64))))
      mel_hat_MxF = np.asarray(tokenizer.decode_mel(
          jnp.asarray(latents_lib.denormalize(x_hat_TxC, stats))[None]))[0]
      snrs.append(snr_db(ref_MxF, mel_hat_MxF))
      if originals is not None:
        vs_audio.append(audio_snr(originals[i], mel_hat_MxF))
    rows.append({"n_q": q, "k": quantizer.k, "rel_mse": err / norm,
                 "mel_snr_db_mean": float(np.mean(snrs)),
                 "mel_snr_db_median": float(np.median(snrs)),
                 "perplexity": perplexity[q - 1], "codes_used": used[q - 1]})
    if originals is not None:
      rows[-1].update(audio_snr_db_mean=float(np.mean(vs_audio)),
                      audio_snr_db_median=float(np.median(vs_audio)))
  return rows


def main(argv) -> None:
  del argv
  if not _AUDIO_SNR.value and (_DATA_DIR.value or _RULE_DB.present):
    raise app.UsageError("--data_dir and --rule_db apply only with --audio_snr")
  latents_dir = _LATENTS_DIR.value
  stats = latents_lib.read_stats(latents_dir)
  tokenizer = make_tokenizer(stats)
  clips = rvq_lib.read_clips(latents_dir, _SPLIT.value)
  raw = rvq_lib.read_clips(latents_dir, _SPLIT.value, normalized=False)
  t0 = time.perf_counter()
  x_NxC = rvq_lib.sample_vectors(latents_dir, _NUM_VECTORS.value, seed=_SEED.value)
  read_s = time.perf_counter() - t0
  print(f"{stats.tokenizer.name}: {x_NxC.shape[0]} train vectors of {x_NxC.shape[1]} "
        f"channels read in {read_s:.1f} s; {len(clips)} {_SPLIT.value} clips, "
        f"{sum(c.num_tokens for c in clips)} tokens; {jax.devices()[0].platform}")
  results = {"latents_dir": latents_dir, "tokenizer": dataclasses.asdict(stats.tokenizer),
             "num_vectors": int(x_NxC.shape[0]), "iters": _ITERS.value, "init": _INIT.value,
             "seed": _SEED.value, "split": _SPLIT.value, "fits": []}
  originals = None
  if _AUDIO_SNR.value:
    originals = audio_mels(stats, clips)
    # The tokenizer's own ceiling: the unquantised latents decoded, against the audio.
    snrs = [audio_snr(o, np.asarray(tokenizer.decode_mel(jnp.asarray(r.latents)[None]))[0])
            for o, r in zip(originals, raw)]
    results["unquantised"] = dict(audio_snr_db_mean=float(np.mean(snrs)),
                                  audio_snr_db_median=float(np.median(snrs)))
    print(f"unquantised {stats.tokenizer.name}: mel SNR against the audio "
          f"{np.mean(snrs):.2f} dB mean ({np.median(snrs):.2f} median)")
  for fit_spec in _FITS.value:
    n_q, k = (int(v) for v in fit_spec.lower().split("x"))
    t0 = time.perf_counter()
    quantizer = rvq_lib.fit(x_NxC, n_q, k, _ITERS.value, jax.random.key(_SEED.value),
                            init=_INIT.value)
    jax.block_until_ready(quantizer)
    fit_s = time.perf_counter() - t0
    train_err = np.asarray(rvq_lib.stage_errors(quantizer, x_NxC)).tolist()
    rows = evaluate(quantizer, clips, raw, stats, tokenizer, originals)
    for row, e in zip(rows, train_err):
      row["train_rel_mse"] = e
      row["bits_per_s"] = row["n_q"] * np.log2(k) * stats.frame_rate
    results["fits"].append({"n_q": n_q, "k": k, "fit_seconds": fit_s, "rows": rows})
    print(f"fit {n_q}x{k}: {fit_s:.1f} s")
  print(f"\n| Q x K | bits/s | train rel. MSE | {_SPLIT.value} rel. MSE | mel SNR dB mean "
        "(median) | stage q: perplexity / codes used | from fit |")
  print("|---|---|---|---|---|---|---|")
  for fit in results["fits"]:
    for r in fit["rows"]:
      print(f"| {r['n_q']} x {r['k']} | {r['bits_per_s']:.0f} | {r['train_rel_mse']:.4f} | "
            f"{r['rel_mse']:.4f} | {r['mel_snr_db_mean']:.2f} ({r['mel_snr_db_median']:.2f}) | "
            f"{r['perplexity']:.0f} / {100 * r['codes_used']:.0f}% | "
            f"{fit['n_q']}x{fit['k']} ({fit['fit_seconds']:.0f} s) |")
  if originals is not None:
    print("\n| Q x K | mel SNR dB against the audio, mean (median) |\n|---|---|")
    print(f"| unquantised | {results['unquantised']['audio_snr_db_mean']:.2f} "
          f"({results['unquantised']['audio_snr_db_median']:.2f}) |")
    for fit in results["fits"]:
      for r in fit["rows"]:
        print(f"| {r['n_q']} x {r['k']} | {r['audio_snr_db_mean']:.2f} "
              f"({r['audio_snr_db_median']:.2f}) |")
    ceiling = results["unquantised"]["audio_snr_db_mean"]
    for fit in results["fits"]:   # Per fit: a prefix of another K is another quantizer.
      within = [r["n_q"] for r in fit["rows"]
                if r["audio_snr_db_mean"] >= ceiling - _RULE_DB.value]
      fit["rule"] = dict(within_db=_RULE_DB.value, chosen_n_q=within[0] if within else None)
      print(f"\n{fit['n_q']}x{fit['k']}: smallest Q within {_RULE_DB.value:g} dB of the "
            f"unquantised latents: {within[0] if within else 'none of its prefixes'}")
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, "results.json"), "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
