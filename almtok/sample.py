"""Fast sampling from the audio LMs: prefix prefill, then a KV-cache decode in lax.scan.

`Sampler` (continuous LM): per audio token, one decoder step gives z (conditional and
unconditional rows share one batch when guidance is on), the denoiser runs its K reverse-diffusion
steps as an inner scan, and the sampled token is fed back. `CodeSampler` (discrete baseline): per
pattern step, one decoder step gives every codebook's logits, guided on logits and filtered by
temperature, top-k and top-p, and the drawn codes are fed back. Either loop is scanned in chunks
of `chunk` steps: one compiled program per (batch, length, settings) runs every chunk, and a
progress bar advances between them.

Audio continuation: prompt tokens are written into the cache in one decoder call and generation
continues after them; the prompt comes back unchanged at the start of the output.

Shape letters: B batch (captions), L tokens, C token channels, D model width, Q codebooks,
K codes per codebook (in the code sampler), X rows (B, or 2B with guidance).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import auto as tqdm

from almtok import diffusion
from almtok.models import discrete_lm
from almtok.models.continuous_lm import ContinuousLM
from almtok.quantizers import rvq
from almtok.text.minilm import TextEmbedding

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  """Everything that shapes one compiled sampler (besides batch and length)."""
  solver_steps: int = 100         # K reverse-diffusion steps per token (respaced schedule).
  solver: str = "ddpm"            # The head's reverse process: a name in diffusion.SOLVERS.
  eta: float = 0.0                # DDIM noise; 1 matches DDPM in distribution.
  cfg: bool = True                # Run unconditional rows beside the conditional ones.
  cfg_scale: float = 3.0          # Guidance scale (1: the conditional prediction exactly).
  cfg_schedule: str = "linear"    # 'constant' or 'linear' (1 at the first token -> cfg_scale).
  temperature: float = 1.0        # Scales the per-step sampling noise.
  # What the head predicts, 'eps' or 'v': fixed by training, so `generate` fills it in from the
  # run's config; a Sampler refuses to run without it.
  prediction: str | None = None
  clip_x0: float | None = 5.0     # Bound on the x0 estimate (latents are normalized to unit std).
  # Dynamic thresholding (Imagen): the percentile of |x0| per token that is scaled down to
  # clip_x0; None clips at clip_x0 instead. Keeps strongly guided chains on the data's scale.
  threshold: float | None = None
  # Clip each channel of x0 to the training latents' range (the analogue of clipping images to
  # [-1, 1]) when the caller provides it: `generate` does, from stats.json.
  data_range: bool = True

  def __post_init__(self):
    if self.solver_steps < 1:
      raise ValueError(f"solver_steps={self.solver_steps}: must be >= 1")
    if self.solver not in diffusion.SOLVERS:
      raise ValueError(f"solver={self.solver!r}: must be one of {sorted(diffusion.SOLVERS)}")
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


@dataclasses.dataclass(frozen=True)
class CodeSamplerSettings:
  """How the discrete baseline samples codes: temperature, top-k / top-p and CFG on logits."""
  cfg: bool = True                # Run unconditional rows beside the conditional ones.
  cfg_scale: float = 3.0          # Guidance scale on logits (1: the conditional logits).
  cfg_schedule: str = "constant"  # 'constant' (AudioGen) or 'linear' (1 at the first step ->
                                  # cfg_scale).
  temperature: float = 1.0        # Divides the logits.
  top_k: int = 250                # Keep the k most likely codes per codebook (0: all).
  top_p: float = 0.0              # Keep the smallest set of codes with this much mass (0: off).

  def __post_init__(self):
    if self.cfg_schedule not in ("constant", "linear"):
      raise ValueError(f"cfg_schedule={self.cfg_schedule!r}: must be 'constant' or 'linear'")
    if self.temperature <= 0:
      raise ValueError(f"temperature={self.temperature}: must be > 0")
    if self.top_k < 0:
      raise ValueError(f"top_k={self.top_k}: must be >= 0 (0 keeps every code)")
    if not 0.0 <= self.top_p <= 1.0:
      raise ValueError(f"top_p={self.top_p}: must be in [0, 1] (0 turns it off)")

  @property
  def guided(self) -> bool:
    return self.cfg


def settings_from_config(config, **overrides) -> SamplerSettings | CodeSamplerSettings:
  """The settings of a run's `config.sample` block (a ConfigDict or its JSON dict) with
  `overrides` on top; the unconditional rows run only where the guidance scale is not 1. For
  the continuous LM the prediction type is the head's (`config.diffusion.prediction`)."""
  fields = dict(config["sample"], **overrides)
  if config["model_name"] == "discrete_lm":
    return CodeSamplerSettings(**fields, cfg=fields["cfg_scale"] != 1.0)
  return SamplerSettings(**fields, cfg=fields["cfg_scale"] != 1.0,
                         prediction=config["diffusion"]["prediction"])


def _prefill(model, text: TextEmbedding, prompt_BxPx: Array, capacity: int, guided: bool,
             fill: float | int):
  """A cache of `capacity` audio slots holding the prefix and the prompt's tokens, with the
  unconditional rows (null prefix) after the conditional ones when `guided`; returns it and each
  row's last prompt token (None without a prompt). The start slot reads `fill` (ignored)."""
  b = prompt_BxPx.shape[0]
  copies = 2 if guided else 1
  use_null = jnp.arange(copies * b) >= b
  text_in = jax.tree.map(lambda a: jnp.concatenate([a] * copies, axis=0), text)
  cache = model.prefill(text_in, use_null, model.init_cache(copies * b, capacity))
  if not prompt_BxPx.shape[1]:
    return cache, None
  prompt = jnp.concatenate([prompt_BxPx] * copies, axis=0)
  inputs = jnp.concatenate([jnp.full_like(prompt[:, :1], fill), prompt[:, :-1]], axis=1)
  _, cache = model.decode(inputs, jnp.int32(0), cache)
  return cache, prompt[:, -1]


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
  solver = diffusion.SOLVERS[settings.solver]
  options = {name: getattr(settings, name) for name in solver.options}
  return solver.sample(denoise, schedule, (b, c), rng, temperature=settings.temperature,
                       prediction=settings.prediction, clip_x0=settings.clip_x0,
                       threshold=settings.threshold, x0_range=x0_range, **options)


def sliding_window(generate: Callable[[int, Array, np.ndarray | None], np.ndarray], window: int,
           total: int, rng: Array, prompt: np.ndarray | None, stride: int) -> np.ndarray:
  """`total` items [B, total, ...] from `generate(n, rng, prompt)`, which gives at most `window`
  (prompt included), by AudioGen's sliding window: the first window is generated (after
  `prompt`, if any); then, while items are missing, the newest `window - stride` items become
  the prompt of the next window, which adds up to `stride` new ones. Each window's prompt is
  prefilled in one parallel pass and its new items are decoded from that KV cache; the cache of
  the window before cannot serve instead, since its deeper layers' keys saw the items that have
  left the window (and the rotary positions would shift)."""
  if not 0 < stride < window:
    raise ValueError(f"the window stride {stride} must be in (0, {window}) items")
  out = generate(min(window, total), jax.random.fold_in(rng, 0), prompt)
  keep = window - stride
  while out.shape[1] < total:
    n = min(window, keep + total - out.shape[1])
    new = generate(n, jax.random.fold_in(rng, out.shape[1]), out[:, -keep:])
    out = np.concatenate([out, new[:, keep:]], axis=1)
  return out


class Sampler:
  """Generates token sequences from a model; compiled programs are cached per shape."""

  def __init__(self, model: ContinuousLM, train_schedule: diffusion.Schedule,
               settings: SamplerSettings,
               x0_range: tuple[np.ndarray, np.ndarray] | None = None):
    """`x0_range` (lo_C, hi_C): the range of each channel of the (normalized) training latents;
    the head's x0 estimates are clipped to it at every reverse step (see `diffusion`)."""
    if settings.prediction is None:
      raise ValueError("SamplerSettings.prediction is unset: pass what the model was trained to "
                       "predict (config.diffusion.prediction)")
    self.graphdef, self.params = nnx.split(model)
    self.settings = settings
    self.schedule = diffusion.respace(train_schedule, settings.solver_steps)
    self.token_dim, self.max_len = model.token_dim, model.max_len
    self.x0_range = None if x0_range is None or not settings.data_range else tuple(
        jnp.asarray(a, jnp.float32).reshape(self.token_dim) for a in x0_range)

  # The pieces below are pure functions of (params, arrays); jit caches them per shape.

  @functools.partial(jax.jit, static_argnums=(0, 4))
  def _start(self, params, text: TextEmbedding, prompt_BxPxC: Array, capacity: int):
    model = nnx.merge(self.graphdef, params)
    cache, prev = _prefill(model, text, prompt_BxPxC, capacity, self.settings.guided, 0.0)
    if prev is None:
      prev = jnp.zeros((cache.mask_BxT.shape[0], self.token_dim), jnp.float32)
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
               return_z: bool = False, stride: int = 0
               ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Samples `num_tokens` tokens per caption, prompt included: float32 [B, L, C].

    Beyond the model's context, windows of the context advance by `stride` tokens (`sliding_window`;
    0: an error instead). With `return_z`, also the conditional decoder outputs that produced
    the generated tokens ([B, L - P, D] for a prompt of P tokens; within the context only).
    """
    b = text.pooled_BxE.shape[0]
    if num_tokens > self.max_len:
      if not stride or return_z:
        raise ValueError(f"{num_tokens} tokens exceed the model's context of {self.max_len}")
      return sliding_window(lambda n, r, p: self.generate(text, n, r, p, chunk, progress),
                            self.max_len, num_tokens, rng,
                            None if prompt_BxPxC is None else np.asarray(prompt_BxPxC), stride)
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


# ---------------------------------------------------------------------------------------------
# The discrete baseline: codes from logits.
# ---------------------------------------------------------------------------------------------


def filter_logits(logits_XxK: Array, top_k: int = 0, top_p: float = 0.0) -> Array:
  """Logits with every code outside the top-k and outside the top-p nucleus set to -inf (the most
  likely code always stays). Works over the last axis."""
  if top_k and top_k < logits_XxK.shape[-1]:
    kth_Xx1 = jax.lax.top_k(logits_XxK, top_k)[0][..., -1:]
    logits_XxK = jnp.where(logits_XxK < kth_Xx1, -jnp.inf, logits_XxK)
  if top_p:
    sorted_XxK = jnp.sort(logits_XxK, axis=-1)[..., ::-1]
    probs_XxK = jax.nn.softmax(sorted_XxK, axis=-1)
    # A code stays if the mass of the codes strictly above it is below top_p.
    above_XxK = jnp.cumsum(probs_XxK, axis=-1) - probs_XxK
    cut_Xx1 = jnp.min(jnp.where(above_XxK < top_p, sorted_XxK, jnp.inf), axis=-1, keepdims=True)
    logits_XxK = jnp.where(logits_XxK < cut_Xx1, -jnp.inf, logits_XxK)
  return logits_XxK


def sample_codes(logits_XxQxK: Array, rng: Array, settings: CodeSamplerSettings) -> Array:
  """One code per row and codebook: int32 [X, Q]."""
  logits = filter_logits(logits_XxQxK / settings.temperature, settings.top_k, settings.top_p)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


class CodeSampler:
  """Generates RVQ codes from a `DiscreteLM`: prefix prefill, then a KV-cache decode over the
  codebook pattern's steps in a chunked lax.scan, like `Sampler` (one compiled program per
  batch, length and settings; a progress bar between chunks).

  Per step, the decoder gives logits for every codebook (conditional and unconditional rows in
  one batch when guided); the codes drawn there, except where the pattern already knows the code
  (the delay pattern's pads, a prompt's codes), are fed back as the next step's input.
  """

  def __init__(self, model, settings: CodeSamplerSettings):
    self.graphdef, self.params = nnx.split(model)
    self.settings = settings
    self.num_codebooks, self.pad = model.num_codebooks, model.pad
    self.pattern, self.delay, self.max_frames = model.pattern, model.delay, model.max_frames

  def known_steps(self, prompt_BxPxQ: np.ndarray, num_frames: int, num_steps: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(codes, known) per step [B, num_steps, Q]: what the pattern fixes before sampling (pads
    outside frames 0..num_frames - 1, and the prompt's frames)."""
    b, p, q = prompt_BxPxQ.shape
    if self.pattern == "delay":
      frame_SxQ = np.asarray(discrete_lm.delay_frames(num_steps, q))
    else:
      frame_SxQ = np.broadcast_to(np.arange(num_steps)[:, None], (num_steps, q))
    outside_SxQ = (frame_SxQ < 0) | (frame_SxQ >= num_frames)
    in_prompt_SxQ = (frame_SxQ >= 0) & (frame_SxQ < p)
    codes = np.full((b, num_steps, q), self.pad, np.int32)
    if p:
      index_SxQ = np.clip(frame_SxQ, 0, p - 1)
      from_prompt = np.take_along_axis(prompt_BxPxQ, np.broadcast_to(index_SxQ[None],
                                                                     (b, num_steps, q)), axis=1)
      codes = np.where(in_prompt_SxQ[None], from_prompt, codes)
    known = np.broadcast_to((outside_SxQ | in_prompt_SxQ)[None], codes.shape)
    return codes.astype(np.int32), np.ascontiguousarray(known)

  @functools.partial(jax.jit, static_argnums=(0, 4))
  def _start(self, params, text: TextEmbedding, prompt_BxPxQ: Array, capacity: int):
    """Prefills the prefix and the first P steps (all known); returns the cache and step P-1."""
    model = nnx.merge(self.graphdef, params)
    cache, prev = _prefill(model, text, prompt_BxPxQ, capacity, self.settings.guided, self.pad)
    if prev is None:
      prev = jnp.full((cache.mask_BxT.shape[0], self.num_codebooks), self.pad, jnp.int32)
    return cache, prev

  @functools.partial(jax.jit, static_argnums=(0, 5))
  def _chunk(self, params, cache, prev_XxQ, first: Array, length: int, total: Array,
             known_codes_BxLxQ: Array, known_BxLxQ: Array, rng: Array):
    """Samples steps first .. first + length - 1 (of `total`); `known_*` cover these steps.
    Returns the new cache, the last step's codes and the steps' codes [B, length, Q]."""
    model = nnx.merge(self.graphdef, params)
    settings = self.settings
    b = known_codes_BxLxQ.shape[0]

    def body(carry, i):
      cache, prev = carry
      index = first + i
      z_XxD, cache = model.step(prev, index, cache)
      logits_XxQxK = model.logits(z_XxD)
      if settings.guided:
        scale = diffusion.cfg_scale_at(index.astype(jnp.float32) / total, settings.cfg_scale,
                                       settings.cfg_schedule)
        logits_XxQxK = diffusion.guided(logits_XxQxK[:b], logits_XxQxK[b:], scale)
      codes_BxQ = sample_codes(logits_XxQxK, jax.random.fold_in(rng, index), settings)
      codes_BxQ = jnp.where(known_BxLxQ[:, i], known_codes_BxLxQ[:, i], codes_BxQ)
      prev = jnp.concatenate([codes_BxQ] * (prev.shape[0] // b), axis=0)
      return (cache, prev), codes_BxQ

    (cache, prev_XxQ), codes_LxBxQ = jax.lax.scan(body, (cache, prev_XxQ),
                                                  jnp.arange(length, dtype=jnp.int32))
    return cache, prev_XxQ, codes_LxBxQ.swapaxes(0, 1)

  def generate(self, text: TextEmbedding, num_frames: int, rng: Array,
               prompt_BxPxQ: Array | None = None, chunk: int = 25,
               progress: bool = True, stride: int = 0) -> np.ndarray:
    """Samples `num_frames` frames of codes per caption, prompt included: int32 [B, F, Q].
    Beyond the model's context, windows advance by `stride` frames (`sliding_window`; 0: an
    error)."""
    b = text.pooled_BxE.shape[0]
    if num_frames > self.max_frames:
      if not stride:
        raise ValueError(f"{num_frames} frames exceed the model's context of {self.max_frames}")
      return sliding_window(lambda n, r, p: self.generate(text, n, r, p, chunk, progress),
                    self.max_frames, num_frames, rng,
                    None if prompt_BxPxQ is None else np.asarray(prompt_BxPxQ), stride)
    if prompt_BxPxQ is None:
      prompt_BxPxQ = np.zeros((b, 0, self.num_codebooks), np.int32)
    prompt_BxPxQ = np.asarray(prompt_BxPxQ, np.int32)
    p = prompt_BxPxQ.shape[1]
    if p >= num_frames:
      raise ValueError(f"the prompt has {p} frames, nothing is left to generate in {num_frames}")
    num_steps = num_frames + self.delay
    chunks = -(-(num_steps - p) // chunk)
    codes, known = self.known_steps(prompt_BxPxQ, num_frames, p + chunks * chunk)
    # Steps before P are wholly known (pads and prompt codes): they go in with the prefix.
    cache, prev = self._start(self.params, text, jnp.asarray(codes[:, :p]),
                              p + chunks * chunk)
    out = [codes[:, :p]]
    bar = tqdm.tqdm(total=num_steps - p, unit="step", disable=not progress, leave=False)
    first = p
    while first < num_steps:
      window = slice(first, first + chunk)
      cache, prev, steps = self._chunk(self.params, cache, prev, jnp.int32(first), chunk,
                                       jnp.int32(num_steps), jnp.asarray(codes[:, window]),
                                       jnp.asarray(known[:, window]),
                                       jax.random.fold_in(rng, first))
      take = min(chunk, num_steps - first)
      out.append(np.asarray(steps[:, :take]))
      bar.update(take)
      first += chunk
    bar.close()
    steps_BxSxQ = np.concatenate(out, axis=1)
    return np.asarray(discrete_lm.to_frames(jnp.asarray(steps_BxSxQ), num_frames, self.pattern))


class LatentCodeSampler:
  """A `CodeSampler` that takes and gives normalized latents, like `Sampler`: a prompt is
  quantized and the generated codes are decoded by the run's RVQ, so that the trainer, `generate`
  and the notebook treat both models alike."""

  def __init__(self, model, settings: CodeSamplerSettings, quantizer: rvq.RVQ):
    self.codes = CodeSampler(model, settings)
    self.quantizer = quantizer
    self.settings = settings
    self.max_len = self.codes.max_frames

  @property
  def params(self):
    return self.codes.params

  @params.setter
  def params(self, value):
    self.codes.params = value

  def generate(self, text: TextEmbedding, num_tokens: int, rng: Array,
               prompt_BxPxC: Array | None = None, chunk: int = 25,
               progress: bool = True, stride: int = 0) -> np.ndarray:
    """Normalized latents [B, num_tokens, C] (the prompt's quantized at the start); windows
    slide over codes, not latents, beyond the context."""
    prompt = None
    if prompt_BxPxC is not None:
      prompt = np.asarray(jax.jit(rvq.RVQ.encode)(self.quantizer, jnp.asarray(prompt_BxPxC)))
    codes_BxLxQ = self.codes.generate(text, num_tokens, rng, prompt, chunk, progress, stride)
    return np.asarray(jax.jit(rvq.RVQ.decode)(self.quantizer, jnp.asarray(codes_BxLxQ)))


def make_sampler(model, settings: SamplerSettings | CodeSamplerSettings, *,
                 schedule: diffusion.Schedule | None = None,
                 x0_range: tuple[np.ndarray, np.ndarray] | None = None,
                 quantizer: rvq.RVQ | None = None) -> Sampler | LatentCodeSampler:
  """The sampler for `settings`' kind of model, taking and giving normalized latents: the
  continuous LM's (its head's training `schedule`, x0 within `x0_range`) or the discrete
  baseline's over `quantizer`'s codes."""
  if isinstance(settings, CodeSamplerSettings):
    if quantizer is None:
      raise ValueError("the discrete baseline samples codes: pass the run's quantizer")
    return LatentCodeSampler(model, settings, quantizer)
  return Sampler(model, schedule, settings, x0_range)
