"""Spectrograms share one fixed dB scale, so a level difference shows; PNGs appear whole."""

import os

import numpy as np
import pytest

from almtok import audio
from almtok import plotting

SR = audio.SAMPLE_RATE


def _tone(amp, freq=440.0, seconds=1.0):
  t = np.arange(int(seconds * SR)) / SR
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _spectrum_pixels(image):
  """The mel panel's pixels: a band of rows and columns well inside the axes, away from the
  title, the level annotation and the colorbar."""
  h, w, _ = image.shape
  return image[int(0.45 * h):int(0.75 * h), int(0.2 * w):int(0.7 * w)].astype(np.float64)


def test_the_scale_covers_a_full_scale_sine_and_80_db_below_it():
  top = max(float(audio.log_mel(_tone(1.0, f)).max()) for f in (100.0, 440.0, 1000.0, 3000.0))
  assert plotting.BOTTOM_DB < top - 60.0 and top < plotting.TOP_DB
  assert plotting.TOP_DB - plotting.BOTTOM_DB == 80.0


def test_sines_40_db_apart_look_different():
  loud = plotting.spectrogram_image(_tone(0.5), SR, "loud")
  quiet = plotting.spectrogram_image(_tone(0.005), SR, "quiet")
  assert loud.shape == quiet.shape and loud.dtype == np.uint8 and loud.shape[-1] == 3
  # With each picture scaled to its own maximum the two panels would be the same picture.
  assert _spectrum_pixels(loud).mean() > _spectrum_pixels(quiet).mean() + 20.0


def test_a_clip_above_the_scale_saturates():
  """A tone 30 dB too loud paints its band in the over-range colour, which nothing else uses."""
  over = np.array([int(plotting.OVER_COLOR[i:i + 2], 16) for i in (1, 3, 5)])
  too_loud = _spectrum_pixels(plotting.spectrogram_image(_tone(30.0), SR))
  fine = _spectrum_pixels(plotting.spectrogram_image(_tone(0.5), SR))
  assert np.any(np.all(np.abs(too_loud - over) < 8, axis=-1))
  assert not np.any(np.all(np.abs(fine - over) < 8, axis=-1))


def test_png_writers(tmp_path):
  one = plotting.spectrogram_png(str(tmp_path / "one.png"), _tone(0.5), SR, "a tone")
  grid = plotting.spectrogram_grid(str(tmp_path / "sub" / "grid.png"),
                                   [_tone(0.5), _tone(0.005), np.zeros(SR, np.float32)],
                                   ["loud", "quiet", "silence"], SR)
  curves = plotting.curves_png(str(tmp_path / "curves.png"), {"loss": ([1, 2, 3], [3, 2, 1])})
  for path in (one, grid, curves):
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # Atomic writes leave no temporaries beside the pictures.
  assert sorted(os.listdir(tmp_path)) == ["curves.png", "one.png", "sub"]
  assert os.listdir(tmp_path / "sub") == ["grid.png"]
  with pytest.raises(ValueError, match="one title per clip"):
    plotting.spectrogram_grid(str(tmp_path / "bad.png"), [_tone(0.5)], [], SR)
