"""Pictures a person would rather look at than read: spectrograms and curves, as PNG files.

Spectrograms share one fixed dB scale (`TOP_DB`, `BOTTOM_DB`) and state their clip's levels, so
that a clip too loud or too quiet looks it; a picture scaled to its own maximum would hide that.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402

from almtok import audio  # noqa: E402
from almtok import fileio  # noqa: E402


# One fixed dB scale for every spectrogram, so that pictures compare and a level error shows. The
# units are `audio.log_mel`'s: dB of the mel-filtered STFT magnitude, in which a full-scale sine
# peaks at +12 to +15 dB (below 3 kHz) and a full-scale square wave at +17 dB. TOP_DB leaves a few
# dB above those; BOTTOM_DB is 80 dB below it, where the quietest detail of the synthetic data
# fades (log_mel's floor, -100 dB, is digital silence). Anything louder than TOP_DB saturates in
# OVER_COLOR, which the colour map does not otherwise use.
TOP_DB = 20.0
BOTTOM_DB = -60.0
CMAP = "magma"
OVER_COLOR = "#39d0ff"


def _draw_mel(ax, wav: np.ndarray, sample_rate: int, title: str) -> None:
  mel_MxF = audio.log_mel(wav, sample_rate)
  seconds = len(wav) / sample_rate
  cmap = plt.get_cmap(CMAP).with_extremes(over=OVER_COLOR)
  image = ax.imshow(mel_MxF, origin="lower", aspect="auto", cmap=cmap, vmin=BOTTOM_DB,
                    vmax=TOP_DB, extent=(0.0, seconds, 0, mel_MxF.shape[0]),
                    interpolation="nearest")
  colorbar = ax.figure.colorbar(image, ax=ax, pad=0.01, extend="max")
  colorbar.set_label("dB", fontsize=8)
  colorbar.ax.tick_params(labelsize=7)
  # The picture carries the clip's level, so a clip that is too loud or too quiet says so.
  over = audio.levels(wav)["clipped"] > 0
  ax.text(0.01, 0.97, audio.format_levels(wav), transform=ax.transAxes, fontsize=7, va="top",
          ha="left", color="white", bbox=dict(facecolor="red" if over else "black", alpha=0.6,
                                              linewidth=0, pad=1.5))
  ax.set_title(title, fontsize=9)
  ax.set_xlabel("seconds")
  ax.set_ylabel("mel bin")


def spectrogram_png(path: str, wav: np.ndarray, sample_rate: int = audio.SAMPLE_RATE,
                    title: str = "") -> str:
  """Writes the log-mel spectrogram of one clip on the fixed dB scale and returns the path."""
  return spectrogram_grid(path, [wav], [title], sample_rate, columns=1)


def spectrogram_image(wav: np.ndarray, sample_rate: int = audio.SAMPLE_RATE,
                      title: str = "") -> np.ndarray:
  """The spectrogram panel, on the fixed dB scale, as an RGB uint8 array [H, W, 3] (for
  TensorBoard)."""
  fig, ax = plt.subplots(figsize=(5.5, 2.6))
  _draw_mel(ax, np.asarray(wav, np.float32), sample_rate, _wrap(title))
  fig.tight_layout()
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
  plt.close(fig)
  return image


def spectrogram_grid(path: str, wavs: Sequence[np.ndarray], titles: Sequence[str],
                     sample_rate: int = audio.SAMPLE_RATE, columns: int = 2) -> str:
  """Writes one panel per clip, titled (e.g. with its caption), and returns the path.

  Every panel uses the same fixed dB scale (TOP_DB..BOTTOM_DB) and is annotated with its clip's
  peak and RMS in dBFS; the file appears whole or not at all.
  """
  if len(wavs) != len(titles) or not wavs:
    raise ValueError(f"need one title per clip and at least one clip, got {len(wavs)} clips, "
                     f"{len(titles)} titles")
  columns = min(columns, len(wavs))
  rows = -(-len(wavs) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 2.6 * rows), squeeze=False)
  for ax in axes.flat[len(wavs):]:
    ax.axis("off")
  for ax, wav, title in zip(axes.flat, wavs, titles):
    _draw_mel(ax, np.asarray(wav, np.float32), sample_rate, _wrap(title))
  fig.tight_layout()
  _save(fig, path)
  return path


def curves_png(path: str, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
               xlabel: str = "step", ylabel: str = "loss", title: str = "",
               logy: bool = False) -> str:
  """Writes named (x, y) curves on one axis, e.g. loss against step, and returns the path."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, (x, y) in curves.items():
    ax.plot(x, y, label=name)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if logy:
    ax.set_yscale("log")
  if title:
    ax.set_title(title)
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  _save(fig, path)
  return path


def confusion_png(path: str, counts_KxK: np.ndarray, classes: Sequence[str],
                  title: str = "") -> str:
  """Writes a confusion matrix (rows: true class, columns: predicted; each row's share of its
  clips as colour, the counts as numbers) and returns the path."""
  counts_KxK = np.asarray(counts_KxK)
  share = counts_KxK / np.maximum(counts_KxK.sum(axis=1, keepdims=True), 1)
  k = len(classes)
  fig, ax = plt.subplots(figsize=(1.2 + 0.45 * k, 1.0 + 0.45 * k))
  ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
  for i in range(k):
    for j in range(k):
      if counts_KxK[i, j]:
        ax.text(j, i, str(counts_KxK[i, j]), ha="center", va="center", fontsize=7,
                color="white" if share[i, j] > 0.6 else "black")
  ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=7)
  ax.set_yticks(range(k), classes, fontsize=7)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  _save(fig, path)
  return path


def _save(fig, path: str) -> None:
  """Saves and closes `fig`, atomically; the format comes from `path`'s extension."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
  try:
    with fileio.atomic_path(path) as tmp:
      fig.savefig(tmp, dpi=100, format=fmt)
  finally:
    plt.close(fig)


def _wrap(text: str, width: int = 60) -> str:
  words, lines, line = text.split(), [], ""
  for word in words:
    if line and len(line) + 1 + len(word) > width:
      lines.append(line)
      line = word
    else:
      line = f"{line} {word}".strip()
  return "\n".join(lines + [line]) if line else "\n".join(lines)
