"""The JAX log-mel, the weight-free `mel` tokenizer, Griffin-Lim, and the tokenizer registry.

Shape letters: B batch, S samples, M mel bins, F frames, T tokens, C token channels.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from almtok import audio
from almtok import tokenizers
from almtok.tokenizers import mel as mel_lib
from almtok.tokenizers import melspec
from almtok.tokenizers import vocoder

SR = audio.SAMPLE_RATE


def _tone(freq: float, seconds: float, amp: float = 0.3) -> np.ndarray:
  t = np.arange(int(seconds * SR)) / SR
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def signals_BxS() -> np.ndarray:
  """A tone over noise, and a chirp + noise with digital silence in the middle; 1 s each."""
  rng = np.random.default_rng(0)
  a = _tone(440.0, 1.0) + 0.02 * rng.standard_normal(SR).astype(np.float32)
  t = np.arange(SR) / SR
  b = (0.2 * np.sin(2 * np.pi * (300 + 2000 * t) * t) +
       0.05 * rng.standard_normal(SR)).astype(np.float32)
  b[6000:10000] = 0.0
  return np.stack([a, b])


@pytest.fixture(scope="module")
def tokenizer() -> mel_lib.MelTokenizer:
  return tokenizers.get("mel")


# ---------------------------------------------------------------------------------------------
# JAX log-mel.
# ---------------------------------------------------------------------------------------------


def test_jax_log_mel_equals_numpy(signals_BxS):
  mel_BxMxF = np.asarray(jax.jit(melspec.log_mel)(signals_BxS))
  for wav_S, got_MxF in zip(signals_BxS, mel_BxMxF):
    want_MxF = audio.log_mel(wav_S)
    assert got_MxF.shape == want_MxF.shape == (64, 1 + SR // 160)
    above_floor = want_MxF > melspec.FLOOR_DB + 10.0
    assert above_floor.mean() > 0.5
    np.testing.assert_allclose(got_MxF[above_floor], want_MxF[above_floor], atol=1e-3)
    np.testing.assert_allclose(got_MxF, want_MxF, atol=0.05)  # Near the floor too, loosely.
  # The silent stretch hits the floor exactly.
  assert np.all(mel_BxMxF[1, :, 45:55] == melspec.FLOOR_DB)


@pytest.mark.parametrize("num_samples", [300, 513, 700])
def test_jax_log_mel_short_signals_match_numpy(num_samples):
  wav_S = np.random.default_rng(num_samples).standard_normal(num_samples).astype(np.float32)
  got_MxF = np.asarray(melspec.log_mel(wav_S[None]))[0]
  np.testing.assert_allclose(got_MxF, audio.log_mel(wav_S), atol=1e-3)


def test_drop_last_leaves_out_the_final_frame(signals_BxS):
  full_BxMxF = melspec.log_mel(signals_BxS[:, :1000])
  dropped_BxMxF = melspec.log_mel(signals_BxS[:, :1000], drop_last=True)
  assert full_BxMxF.shape[2] == 7 and dropped_BxMxF.shape[2] == 6
  np.testing.assert_array_equal(dropped_BxMxF, full_BxMxF[:, :, :6])


def test_mel_snr_closed_form():
  mel_BxMxF = jnp.asarray(np.random.default_rng(1).normal(-40.0, 10.0, (2, 64, 50)), jnp.float32)
  centred = mel_BxMxF - jnp.mean(mel_BxMxF, axis=(1, 2), keepdims=True)
  var_B = jnp.mean(jnp.square(centred), axis=(1, 2))
  # A constant offset of c dB: SNR = 10 log10(var / c²).
  snr_B = melspec.mel_snr_db(mel_BxMxF, mel_BxMxF + 2.0)
  np.testing.assert_allclose(snr_B, 10 * np.log10(var_B / 4.0), rtol=1e-5)
  # Predicting the clip mean gives exactly 0 dB.
  mean_BxMxF = mel_BxMxF - centred
  np.testing.assert_allclose(melspec.mel_snr_db(mel_BxMxF, mean_BxMxF), 0.0, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# The mel tokenizer.
# ---------------------------------------------------------------------------------------------


def test_mel_tokenizer_geometry(tokenizer):
  assert (tokenizer.sample_rate, tokenizer.frame_rate, tokenizer.latent_dim) == (SR, 25.0, 256)
  wav_BxS = np.zeros((2, 4 * SR), np.float32)
  assert tokenizer.encode(wav_BxS).shape == (2, 100, 256)
  # 4.1 s = 410 frames: two trailing frames do not fill a token.
  assert tokenizer.encode(np.zeros((1, 65_600), np.float32)).shape == (1, 102, 256)
  assert tokenizers.get("mel", group=2).encode(wav_BxS).shape == (2, 200, 128)


def test_token_layout_is_frame_major(signals_BxS, tokenizer):
  mel_BxMxF = np.asarray(tokenizer.mel(signals_BxS))
  x_BxTxC = np.asarray(jax.jit(tokenizer.encode)(signals_BxS))
  assert mel_BxMxF.shape == (2, 64, 100) and x_BxTxC.shape == (2, 25, 256)
  # Jitted and eager log-mel may round differently; the layout is what is checked here.
  for t, g, m in [(0, 0, 0), (3, 1, 10), (24, 3, 63), (7, 2, 31)]:
    np.testing.assert_allclose(x_BxTxC[:, t, g * 64 + m], mel_BxMxF[:, m, 4 * t + g], atol=1e-3)
  assert not np.allclose(x_BxTxC[:, 3, 1 * 64 + 10], mel_BxMxF[:, 10, 4 * 3 + 2], atol=1e-3)


def test_stacking_round_trip_is_exact(signals_BxS, tokenizer):
  mel_BxMxF = np.asarray(tokenizer.mel(signals_BxS[:, :15_000]))   # 93 frames: 23 tokens.
  back_BxMxF = np.asarray(tokenizer.decode_mel(tokenizer.encode_mel(mel_BxMxF)))
  assert back_BxMxF.shape == (2, 64, 92)
  np.testing.assert_array_equal(back_BxMxF, mel_BxMxF[:, :, :92])


def test_unstack_rejects_a_width_that_does_not_split():
  with pytest.raises(ValueError, match="multiple of the group"):
    mel_lib.unstack_frames(jnp.zeros((1, 3, 10)), 4)


# ---------------------------------------------------------------------------------------------
# Griffin-Lim.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tone_round_trip(tokenizer):
  wav_BxS = _tone(440.0, 1.0)[None]
  x_BxTxC = tokenizer.encode(wav_BxS)
  return wav_BxS, x_BxTxC, tokenizer.decode(x_BxTxC)


def test_griffin_lim_length_and_pitch(tone_round_trip):
  wav_BxS, x_BxTxC, out_BxS = tone_round_trip
  assert out_BxS.shape == (1, x_BxTxC.shape[1] * 4 * 160) == wav_BxS.shape
  assert out_BxS.dtype == np.float32 and np.all(np.isfinite(out_BxS))
  spectrum = np.abs(np.fft.rfft(out_BxS[0] * np.hanning(out_BxS.shape[1])))
  peak_hz = np.argmax(spectrum) * SR / out_BxS.shape[1]
  assert abs(peak_hz - 440.0) < 10.0, peak_hz
  # The level comes back too (within 3 dB RMS).
  assert abs(audio.rms_db(out_BxS[0]) - audio.rms_db(wav_BxS[0])) < 3.0


def test_griffin_lim_output_has_the_input_mel(tone_round_trip, tokenizer):
  _, x_BxTxC, out_BxS = tone_round_trip
  mel_BxMxF = tokenizer.decode_mel(x_BxTxC)
  snr_B = melspec.mel_snr_db(mel_BxMxF, tokenizer.mel(out_BxS))
  assert float(snr_B[0]) > 15.0


def test_griffin_lim_magnitude_fits_the_mel_and_survives_wild_input():
  gl = vocoder.GriffinLim()
  mel_BxMxF = np.asarray(melspec.log_mel(_tone(440.0, 0.5)[None], drop_last=True))
  basis_MxK = audio.mel_filterbank()
  refined = gl.mel_to_stft(mel_BxMxF)
  start = vocoder.GriffinLim(nnls_iter=0).mel_to_stft(mel_BxMxF)
  assert refined.shape == (1, basis_MxK.shape[1], mel_BxMxF.shape[2]) and np.all(refined >= 0)
  snr = lambda mag: float(melspec.mel_snr_db(
      mel_BxMxF, 20 * np.log10(np.maximum(basis_MxK @ mag, audio.MEL_FLOOR)))[0])
  # The updates improve on the clipped pseudo-inverse they start from.
  assert snr(refined) > snr(start) + 3.0 and snr(refined) > 25.0, (snr(start), snr(refined))
  # A mel far from real audio (uniform in [-120, 80] dB, a NaN) still gives a finite signal.
  wild = np.random.default_rng(0).uniform(-120, 80, mel_BxMxF.shape).astype(np.float32)
  wild[0, 0, 0] = np.nan
  assert np.all(np.isfinite(gl.mel_to_wav(wild)))


def test_griffin_lim_is_deterministic_and_batched():
  gl = vocoder.GriffinLim(n_iter=4)
  mel_BxMxF = np.asarray(melspec.log_mel(np.stack([_tone(300.0, 0.2), _tone(900.0, 0.2)]),
                                         drop_last=True))
  out_BxS = gl.mel_to_wav(mel_BxMxF)
  assert out_BxS.shape == (2, 20 * 160)
  np.testing.assert_array_equal(out_BxS, gl.mel_to_wav(mel_BxMxF))
  np.testing.assert_allclose(gl.mel_to_wav(mel_BxMxF[1:]), out_BxS[1:], atol=1e-5)


def test_registry_rejects_unknown_names():
  with pytest.raises(ValueError, match="unknown tokenizer 'nope'"):
    tokenizers.get("nope")
