"""Fast sampling from the continuous LM: prefix prefill, then a KV-cache decode in lax.scan.

Per audio token, one decoder step gives z (conditional and unconditional rows share one batch
when guidance is on), the denoiser runs its K reverse-diffusion steps as an inner scan, and the
sampled token is fed back. The token loop is scanned in chunks of `chunk` tokens: one compiled
program per (batch, length, settings) runs every chunk, and a progress bar advances between them.

Audio continuation: prompt tokens are written into the cache in one decoder call and generation
continues after them; the prompt comes back unchanged at the start of the output.

Shape letters: B batch (captions), L tokens, C token channels, D model width.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import auto as tqdm

from almtok import diffusion
from almtok.models.continuous_lm import ContinuousLM
from almtok.text.minilm import TextEmbedding

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  """Everything that shapes one compiled sampler (besides batch and length)."""
  steps: int = 100                # K reverse-diffusion steps per token (respaced schedule).
  sampler: str = "ddpm"           # 'ddpm' (ancestral, respaced) or 'ddim'.
  eta: float = 0.0                # DDIM noise; 1 matches DDPM in distribution.
  cfg: bool = True                # Run unconditional rows beside the conditional ones.
  cfg_scale: float = 3.0          # Guidance scale (1: the conditional prediction exactly).
  cfg_schedule: str = "linear"    # 'constant' or 'linear' (1 at the first token -> cfg_scale).
  temperature: float = 1.0        # Scales the per-step sampling noise.
  # What the head predicts, 'eps' or 'v': fixed by training, so `generate` fills it in from the
  # run's config; a Sampler refuses to run without it.
  prediction: str | None = None
  clip_x0: float | None = 5.0     # Bound on the x0 estimate (latents are normalised to unit std).
  # Dynamic thresholding (Imagen): the percentile of |x0| per token that is scaled down to
  # clip_x0; None clips at clip_x0 instead. Keeps strongly guided chains on the data's scale.
  threshold: float | None = None
  # Clip each channel of x0 to the training latents' range (the analogue of clipping images to
  # [-1, 1]) when the caller provides it: `generate` does, from stats.json.
  data_range: bool = True

  def __post_init__(self):
    if self.steps < 1:
      raise ValueError(f"steps={self.steps}: must be >= 1")
    if self.sampler not in ("ddpm", "ddim"):
      raise ValueError(f"sampler={self.sampler!r}: must be 'ddpm' or 'ddim'")
    if self.cfg_schedule not in ("constant", "linear"):
      raise ValueError(f"cfg_schedule={self.cfg_schedule!r}: must be 'constant' or 'linear'")
    if self.temperature <= 0:
      raise ValueError(f"temperature={self.temperature}: must be > 0")
    if self.prediction not in (None, "eps", "v"):
      raise ValueError(f"prediction={self.prediction!r}: must be 'eps' or 'v'")
    if self.threshold is not None and not (0 < self.threshold < 1 and self.clip_x0):
      raise ValueError(f"threshold={self.threshold}: must be a percentile in (0, 1), with a "
                       f"bound clip_x0 > 0")
    if self.clip_x0 is not None and self.clip_x0 <= 0:
      raise ValueError(f"clip_x0={self.clip_x0}: must be > 0 (or None)")

  @property
  def guided(self) -> bool:
    return self.cfg


def settings_from_config(config, **overrides) -> SamplerSettings:
  """The settings of a run's `config.sample` block (a ConfigDict or its JSON dict) with
  `overrides` on top; the prediction type is the head's (`config.diffusion.prediction`), and the
  unconditional rows run only where the guidance scale is not 1."""
  fields = dict(config["sample"], **overrides)
  return SamplerSettings(**fields, cfg=fields["cfg_scale"] != 1.0,
                         prediction=config["diffusion"]["prediction"])


def _sample_token(model: ContinuousLM, z_XxD: Array, schedule: diffusion.Schedule,
                  settings: SamplerSettings, progress: Array, rng: Array,
                  x0_range: tuple[Array, Array] | None = None) -> Array:
  """Draws x ~ p(x | z) with the head; with guidance, z holds [cond; uncond] rows."""
  b = z_XxD.shape[0] // (2 if settings.guided else 1)
  c = model.token_dim
  if settings.guided:
    scale = diffusion.cfg_scale_at(progress, settings.cfg_scale, settings.cfg_schedule)
    denoise = diffusion.with_cfg(model.head, z_XxD[:b], z_XxD[b:], scale)
  else:
    denoise = lambda x_t, t: model.head(x_t, t, z_XxD)
  kw = dict(temperature=settings.temperature, prediction=settings.prediction,
            clip_x0=settings.clip_x0, threshold=settings.threshold, x0_range=x0_range)
  if settings.sampler == "ddpm":
    return diffusion.ddpm_sample(denoise, schedule, (b, c), rng, **kw)
  return diffusion.ddim_sample(denoise, schedule, (b, c), rng, eta=settings.eta, **kw)


class Sampler:
  """Generates token sequences from a model; compiled programs are cached per shape."""

  def __init__(self, model: ContinuousLM, train_schedule: diffusion.Schedule,
               settings: SamplerSettings,
               x0_range: tuple[np.ndarray, np.ndarray] | None = None):
    """`x0_range` (lo_C, hi_C): the range of each channel of the (normalised) training latents;
    the head's x0 estimates are clipped to it at every reverse step (see `diffusion`)."""
    if settings.prediction is None:
      raise ValueError("SamplerSettings.prediction is unset: pass what the model was trained to "
                       "predict (config.diffusion.prediction)")
    self.graphdef, self.params = nnx.split(model)
    self.settings = settings
    self.schedule = diffusion.respace(train_schedule, settings.steps)
    self.token_dim, self.max_len = model.token_dim, model.max_len
    self.x0_range = None if x0_range is None or not settings.data_range else tuple(
        jnp.asarray(a, jnp.float32).reshape(self.token_dim) for a in x0_range)

  # The pieces below are pure functions of (params, arrays); jit caches them per shape.

  @functools.partial(jax.jit, static_argnums=(0, 4))
  def _start(self, params, text: TextEmbedding, prompt_BxPxC: Array, capacity: int):
    model = nnx.merge(self.graphdef, params)
    b = prompt_BxPxC.shape[0]
    rows = 2 * b if self.settings.guided else b
    use_null = jnp.arange(rows) >= b
    text_in = jax.tree.map(lambda a: jnp.concatenate([a] * (rows // b), axis=0), text)
    cache = model.prefill(text_in, use_null, model.init_cache(rows, capacity))
    p = prompt_BxPxC.shape[1]
    if p:
      prompt = jnp.concatenate([prompt_BxPxC] * (rows // b), axis=0)
      inputs = jnp.concatenate([jnp.zeros_like(prompt[:, :1]), prompt[:, :-1]], axis=1)
      _, cache = model.extend(inputs, jnp.int32(0), cache)
      prev = prompt[:, -1]
    else:
      prev = jnp.zeros((rows, self.token_dim), jnp.float32)
    return cache, prev

  @functools.partial(jax.jit, static_argnums=(0, 5))
  def _chunk(self, params, cache, prev_XxC, first: Array, length: int, total: Array,
             rng: Array):
    """Samples tokens first .. first + length - 1 (of `total`); returns the new cache and last
    token, the tokens [B, length, C] and the conditional z that produced them [B, length, D]."""
    model = nnx.merge(self.graphdef, params)
    b = prev_XxC.shape[0] // (2 if self.settings.guided else 1)

    def body(carry, index):
      cache, prev = carry
      z_XxD, cache = model.step(prev, index, cache)
      x_BxC = _sample_token(model, z_XxD, self.schedule, self.settings,
                            index.astype(jnp.float32) / total, jax.random.fold_in(rng, index),
                            self.x0_range)
      prev = jnp.concatenate([x_BxC] * (prev.shape[0] // b), axis=0)
      return (cache, prev), (x_BxC, z_XxD[:b])

    (cache, prev_XxC), (x_LxBxC, z_LxBxD) = jax.lax.scan(
        body, (cache, prev_XxC), first + jnp.arange(length, dtype=jnp.int32))
    return cache, prev_XxC, x_LxBxC.swapaxes(0, 1), z_LxBxD.swapaxes(0, 1)

  def generate(self, text: TextEmbedding, num_tokens: int, rng: Array,
               prompt_BxPxC: Array | None = None, chunk: int = 25, progress: bool = True,
               return_z: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Samples `num_tokens` tokens per caption, prompt included: float32 [B, L, C].

    With `return_z`, also the conditional decoder outputs that produced the generated tokens
    ([B, L - P, D] for a prompt of P tokens).
    """
    b = text.pooled_BxE.shape[0]
    if num_tokens > self.max_len:
      raise ValueError(f"{num_tokens} tokens exceed the model's context of {self.max_len}")
    if prompt_BxPxC is None:
      prompt_BxPxC = jnp.zeros((b, 0, self.token_dim), jnp.float32)
    p = prompt_BxPxC.shape[1]
    if p >= num_tokens:
      raise ValueError(f"the prompt has {p} tokens, nothing is left to generate in {num_tokens}")
    chunks = -(-(num_tokens - p) // chunk)
    cache, prev = self._start(self.params, text, jnp.asarray(prompt_BxPxC, jnp.float32),
                              p + chunks * chunk)
    out, zs = [np.asarray(prompt_BxPxC, np.float32)], []
    bar = tqdm.tqdm(total=num_tokens - p, unit="tok", disable=not progress, leave=False)
    first = p
    while first < num_tokens:
      # The same chunk length every time (one compiled program); the last one is cut after.
      cache, prev, x, z = self._chunk(self.params, cache, prev, jnp.int32(first), chunk,
                                      jnp.int32(num_tokens), jax.random.fold_in(rng, first))
      take = min(chunk, num_tokens - first)
      out.append(np.asarray(x[:, :take]))
      zs.append(np.asarray(z[:, :take]))
      bar.update(take)
      first += chunk
    bar.close()
    tokens = np.concatenate(out, axis=1)
    return (tokens, np.concatenate(zs, axis=1)) if return_z else tokens
