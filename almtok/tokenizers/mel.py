"""The weight-free `mel` tokenizer: stacked log-mel frames as continuous tokens.

Log-mel (16 kHz, 64 bins, hop 160: 100 frames per second, see `melspec`) with exactly S // hop
frames (the final centred frame is left out, so 4 s give 400 frames). `group` consecutive frames
make one token of C = group · M channels, frame-major: channel `g · M + m` of token t holds mel
bin m of frame `t · group + g`. Trailing frames that do not fill a group are dropped. With the
default group of 4: 256-d tokens at 25 Hz. Encoding is jittable; decoding unstacks the frames
(exactly) and runs a vocoder on the host (Griffin-Lim unless another is given).

Shape letters: B batch, S samples, M mel bins, F frames, G frames per token, T tokens,
C = G · M token channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from almtok import audio
from almtok.tokenizers import melspec
from almtok.tokenizers import vocoder as vocoder_lib

Array = jax.Array


def stack_frames(mel_BxMxF: Array, group: int) -> Array:
  """Tokens [B, F // G, G · M]: frame-major groups of G frames; leftover frames dropped."""
  b, m, f = mel_BxMxF.shape
  t = f // group
  mel_BxFxM = jnp.swapaxes(mel_BxMxF[:, :, :t * group], 1, 2)
  return mel_BxFxM.reshape(b, t, group * m)


def unstack_frames(x_BxTxC: Array, group: int) -> Array:
  """The inverse of `stack_frames`: mel [B, C // G, T · G]."""
  b, t, c = x_BxTxC.shape
  if c % group:
    raise ValueError(f"token width {c} is not a multiple of the group {group}")
  return jnp.swapaxes(x_BxTxC.reshape(b, t * group, c // group), 1, 2)


class MelTokenizer:
  """Stacked log-mel frames; see the module docstring for the layout."""

  def __init__(self, group: int = 4, n_mels: int = audio.N_MELS,
               vocoder: vocoder_lib.Vocoder | None = None):
    if group < 1:
      raise ValueError(f"group must be >= 1, got {group}")
    self.group = group
    self.n_mels = n_mels
    self.sample_rate = audio.SAMPLE_RATE
    self.hop_length = audio.HOP_LENGTH
    self.frame_rate = self.sample_rate / self.hop_length / group
    self.latent_dim = group * n_mels
    self.vocoder = vocoder or vocoder_lib.GriffinLim(sample_rate=self.sample_rate,
                                                     hop_length=self.hop_length)
    self._encode = jax.jit(lambda wav: self.encode_mel(self.mel(wav)))

  def mel(self, wav_BxS: Array) -> Array:
    """Log-mel in dB [B, M, S // hop], the frames that tokens are made of. Jittable."""
    return melspec.log_mel(wav_BxS, sample_rate=self.sample_rate, n_mels=self.n_mels,
                           hop_length=self.hop_length, drop_last=True)

  def encode_mel(self, mel_BxMxF: Array) -> Array:
    return stack_frames(mel_BxMxF, self.group)

  def decode_mel(self, x_BxTxC: Array) -> Array:
    return unstack_frames(x_BxTxC, self.group)

  def encode(self, wav_BxS: Array) -> Array:
    """Tokens [B, (S // hop) // G, G · M]. Jittable."""
    return self._encode(wav_BxS)

  def decode(self, x_BxTxC: Array) -> np.ndarray:
    """Waveforms [B, T · G · hop] through the vocoder (host numpy; not jittable)."""
    return self.vocoder.mel_to_wav(np.asarray(self.decode_mel(jnp.asarray(x_BxTxC))))
