"""Vocoders: log-mel (dB) back to waveform.

A `Vocoder` turns a batch of log-mel spectrograms in dB, laid out like `melspec.log_mel` output
(centred frames, hop `hop_length`), into waveforms of exactly F · hop_length samples, so that a
mel of S // hop frames comes back as a signal of the original length when S is a multiple of the
hop. The default, `GriffinLim`, has no weights; it runs in numpy (librosa) on the host and is
not jittable. A learned vocoder can implement the same protocol.

Shape letters: B batch, M mel bins, F frames, S samples, K = n_fft // 2 + 1 FFT bins.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from almtok import audio


class Vocoder(Protocol):
  sample_rate: int
  hop_length: int

  def mel_to_wav(self, mel_dB_BxMxF: np.ndarray) -> np.ndarray:
    """Waveforms [B, F · hop_length], float32."""
    ...


class GriffinLim:
  """Mel (dB) -> linear STFT magnitude (non-negative least squares) -> Griffin-Lim phase.

  Uses the STFT settings of `audio.log_mel` (Hann window of `win_length` centred in `n_fft`,
  reflect padding, magnitude not power) so that the output's log-mel approximates the input.
  The magnitude is the clipped pseudo-inverse of the mel filterbank refined by `nnls_iter`
  multiplicative updates (Lee & Seung), a fixed amount of numpy matmuls whatever the input:
  a general-purpose solver's iteration count grows on generated mels far from real audio.
  Runs on the host in numpy; not jittable. `seed` fixes the random initial phase, so the same
  mel always gives the same waveform, whatever else is in the batch.
  """

  def __init__(self, sample_rate: int = audio.SAMPLE_RATE, n_fft: int = audio.N_FFT,
               hop_length: int = audio.HOP_LENGTH, win_length: int = audio.WIN_LENGTH,
               n_iter: int = 32, momentum: float = 0.99, nnls_iter: int = 50, seed: int = 0):
    self.sample_rate = sample_rate
    self.n_fft = n_fft
    self.hop_length = hop_length
    self.win_length = win_length
    self.n_iter = n_iter
    self.momentum = momentum
    self.nnls_iter = nnls_iter
    self.seed = seed

  def mel_to_stft(self, mel_dB_BxMxF: np.ndarray) -> np.ndarray:
    """Non-negative STFT magnitude [B, K, F] whose mel projection best matches the input."""
    mel_dB_BxMxF = np.asarray(mel_dB_BxMxF, np.float32)
    b, m, f = mel_dB_BxMxF.shape
    # Generated mels can leave the range of real audio; they are held to [floor, +60 dB].
    mel_dB = np.clip(np.nan_to_num(mel_dB_BxMxF, nan=-100.0),
                     20.0 * np.log10(audio.MEL_FLOOR), 60.0)
    # Frames of every clip side by side: [M, B·F], all in float64 for the updates' ratios.
    mel_MxN = np.power(10.0, mel_dB.astype(np.float64) / 20.0).transpose(1, 0, 2).reshape(m, -1)
    basis_MxK = audio.mel_filterbank(self.sample_rate, self.n_fft, m).astype(np.float64)
    # Start strictly positive (a multiplicative update cannot move a zero).
    mag_KxN = np.maximum(np.linalg.pinv(basis_MxK) @ mel_MxN, audio.MEL_FLOOR)
    target_KxN = basis_MxK.T @ mel_MxN
    gram_KxK = basis_MxK.T @ basis_MxK
    for _ in range(self.nnls_iter):
      mag_KxN *= target_KxN / np.maximum(gram_KxK @ mag_KxN, 1e-30)
    return mag_KxN.reshape(-1, b, f).transpose(1, 0, 2).astype(np.float32)

  def mel_to_wav(self, mel_dB_BxMxF: np.ndarray) -> np.ndarray:
    """Waveforms [B, F · hop_length], float32."""
    import librosa  # pylint: disable=g-import-not-at-top
    mel_dB_BxMxF = np.asarray(mel_dB_BxMxF, np.float32)
    if mel_dB_BxMxF.ndim != 3:
      raise ValueError(f"expected mel [batch, mels, frames], got {mel_dB_BxMxF.shape}")
    num_frames = mel_dB_BxMxF.shape[2]
    mag_BxKxF = self.mel_to_stft(mel_dB_BxMxF)
    # A signal of F · hop samples has F + 1 centred frames; the missing last one repeats the
    # final frame, so Griffin-Lim's analysis and synthesis agree on the frame count.
    mag_BxKxF1 = np.concatenate([mag_BxKxF, mag_BxKxF[:, :, -1:]], axis=2)
    # One clip at a time, each from the same initial phase, so that a clip's waveform does
    # not depend on what else is in the batch.
    wavs = [librosa.griffinlim(
        mag_KxF1, n_iter=self.n_iter, hop_length=self.hop_length, win_length=self.win_length,
        n_fft=self.n_fft, window="hann", center=True, pad_mode="reflect",
        momentum=self.momentum, length=num_frames * self.hop_length,
        random_state=np.random.default_rng(self.seed)) for mag_KxF1 in mag_BxKxF1]
    return np.stack(wavs).astype(np.float32)
