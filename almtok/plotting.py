"""Pictures a person would rather look at than read: spectrograms and curves, as PNG files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402

from almtok import audio  # noqa: E402


def _draw_mel(ax, wav: np.ndarray, sample_rate: int, title: str) -> None:
  mel_MxF = audio.log_mel(wav, sample_rate)
  seconds = len(wav) / sample_rate
  top = float(mel_MxF.max())
  ax.imshow(mel_MxF, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
            extent=(0.0, seconds, 0, mel_MxF.shape[0]), interpolation="nearest")
  ax.set_title(title, fontsize=9)
  ax.set_xlabel("seconds")
  ax.set_ylabel("mel bin")


def spectrogram_png(path: str, wav: np.ndarray, sample_rate: int = audio.SAMPLE_RATE,
                    title: str = "") -> str:
  """Writes the log-mel spectrogram of one clip (80 dB range) and returns the path."""
  return spectrogram_grid(path, [wav], [title], sample_rate, columns=1)


def spectrogram_image(wav: np.ndarray, sample_rate: int = audio.SAMPLE_RATE,
                      title: str = "") -> np.ndarray:
  """The spectrogram panel as an RGB uint8 array [H, W, 3] (for TensorBoard)."""
  fig, ax = plt.subplots(figsize=(5.5, 2.6))
  _draw_mel(ax, np.asarray(wav, np.float32), sample_rate, _wrap(title))
  fig.tight_layout()
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
  plt.close(fig)
  return image


def spectrogram_grid(path: str, wavs: Sequence[np.ndarray], titles: Sequence[str],
                     sample_rate: int = audio.SAMPLE_RATE, columns: int = 2) -> str:
  """Writes one panel per clip, titled (e.g. with its caption), and returns the path."""
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
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
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
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _wrap(text: str, width: int = 60) -> str:
  words, lines, line = text.split(), [], ""
  for word in words:
    if line and len(line) + 1 + len(word) > width:
      lines.append(line)
      line = word
    else:
      line = f"{line} {word}".strip()
  return "\n".join(lines + [line]) if line else "\n".join(lines)
