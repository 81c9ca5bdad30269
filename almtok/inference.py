"""A trained run's inference path: its sampling settings, its checks, and captions -> waveforms.

`Generator` loads a training workdir once (EMA weights, text encoder, tokenizer and vocoder,
the latents' normalizer) and turns captions into waveforms with the run's own `config.sample`
block, checked against what the run fixes (`run_settings`, `model_settings`). `generate`, the
evaluation and the notebook sample a run through it; the token samplers themselves are
`sample.py`'s.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from almtok import configlib
from almtok import models
from almtok import sample
from almtok import state as state_lib
from almtok import tokenizers
from almtok.latents import store as latents_lib
from almtok.text.minilm import TextEncoder

Settings = sample.SamplerSettings | sample.CodeSamplerSettings


def check_compatible(config: dict[str, Any], stats: latents_lib.Stats) -> None:
  """The checkpoint, its latents' stats and this code must agree; names what does not."""
  if config.get("model_name") not in models.NAMES:
    raise configlib.ConfigError(f"checkpoint model_name={config.get('model_name')!r}: this "
                                f"almtok generates from {list(models.NAMES)}")
  if config["model_name"] == "discrete_lm":
    return   # Its quantizer is checked against the latents when it is loaded.
  token_dim = config["model"]["token_dim"]
  if stats.latent_dim != token_dim:
    raise configlib.ConfigError(f"checkpoint token_dim={token_dim} does not match the latents' "
                                f"latent_dim={stats.latent_dim}")


def model_settings(settings: Settings, config: Any, workdir: str) -> Settings:
  """`settings` with what the trained head fixes filled in from the run's config: its prediction
  type. A caller's value that contradicts the run, or more head steps than the head was trained
  on, is a one-line error. The discrete baseline's settings fix nothing of the kind."""
  if isinstance(settings, sample.CodeSamplerSettings):
    if config["model_name"] != "discrete_lm":
      raise configlib.ConfigError(f"the model in {workdir} is a {config['model_name']}: "
                                  "sample it with its own config.sample keys")
    return settings
  if config["model_name"] == "discrete_lm":
    raise configlib.ConfigError(f"the model in {workdir} is the discrete baseline: sample it "
                                "with config.sample keys cfg_scale, cfg_schedule, temperature, "
                                "top_k, top_p")
  trained = config["diffusion"]["prediction"]
  if settings.prediction is None:
    settings = dataclasses.replace(settings, prediction=trained)
  elif settings.prediction != trained:
    raise configlib.ConfigError(
        f"prediction={settings.prediction!r}: the model in {workdir} was trained to predict "
        f"{trained!r} (leave prediction unset to take it from the run)")
  timesteps = config["diffusion"]["timesteps"]
  if settings.solver_steps > timesteps:
    raise configlib.ConfigError(
        f"config.sample.solver_steps={settings.solver_steps}: the head was trained on "
        f"{timesteps} diffusion timesteps; use at most that many")
  return settings


def run_settings(run_config: dict[str, Any], overrides: dict[str, Any] | None, workdir: str
                 ) -> Settings:
  """The run's own sampling settings with `--config.*` overrides on top; one line for a
  key the run's model has not, or a value out of range."""
  unknown = sorted(set(overrides or {}) - set(run_config["sample"]))
  if unknown:
    raise configlib.ConfigError(
        f"config.sample.{unknown[0]}: the {run_config['model_name']} in {workdir} has no such "
        f"sampling setting (it has {', '.join(run_config['sample'])})")
  try:
    return sample.settings_from_config(run_config, **(overrides or {}))
  except TypeError as e:
    raise configlib.ConfigError(f"config.sample: {e}") from None
  except ValueError as e:
    raise configlib.ConfigError(f"config.sample.{e}") from None


def sample_flag_defaults() -> ml_collections.ConfigDict:
  """`--config.sample.*`'s keys for a command line that samples some run: every setting of
  either sampler, with its default (a key the run's model has not is one error line once the
  run is known: `run_settings`)."""
  keys = {}
  for cls in (sample.SamplerSettings, sample.CodeSamplerSettings):
    for field in dataclasses.fields(cls):
      if field.name in ("cfg", "prediction") or field.name in keys:
        continue
      keys[field.name] = (field.default if field.default is not None
                          else ml_collections.config_dict.placeholder(float))
  return ml_collections.ConfigDict({"sample": keys})


class Generator:
  """A run's model, loaded once, that turns captions into waveforms: the sampler with the run's
  settings (`model_settings`), its text encoder, and its tokenizer and vocoder.

  With `settings.data_range` the continuous head's x0 estimates stay within the training latents'
  per-channel range that stats.json records. The run and the settings are checked when it is
  made; the model loads at the first call, after that call's arguments are checked.
  """

  def __init__(self, workdir: str, settings: Settings):
    raw = state_lib.load_run_config(workdir)
    self.stats = state_lib.run_stats(workdir)
    check_compatible(raw, self.stats)
    self.settings = model_settings(settings, raw, workdir)
    self.config = ml_collections.ConfigDict(raw)
    self.workdir = workdir
    self.tokenizer = tokenizers.from_stats(self.stats)
    self.sample_rate = self.tokenizer.sample_rate
    x0_range = None
    if isinstance(self.settings, sample.SamplerSettings) and self.settings.data_range:
      x0_range = latents_lib.data_range(self.stats)
      if x0_range is None:
        raise configlib.ConfigError(
            f"{workdir}/{state_lib.STATS_FILE} records no per-channel range of the latents "
            f"(prepared by an older almtok): prepare again, or sample without it "
            f"(--config.sample.data_range=false)")
    self._x0_range = x0_range
    self._sampler = None

  @property
  def sampler(self) -> sample.Sampler | sample.LatentCodeSampler:
    """The sampler over the run's EMA weights, loaded on first use (after the checks)."""
    if self._sampler is None:
      quantizer = (state_lib.run_quantizer(self.workdir)
                   if self.config.model_name == "discrete_lm" else None)
      model = state_lib.load_model(self.workdir, self.config, use_ema=True)
      self._sampler = sample.make_sampler(model, self.settings,
                                          schedule=state_lib.make_schedule(self.config),
                                          x0_range=self._x0_range, quantizer=quantizer)
      self.text_encoder = TextEncoder(max_len=self.config.model.text_len)
    return self._sampler

  @property
  def context_seconds(self) -> float:
    return self.config.model.max_len / self.tokenizer.frame_rate

  def num_tokens(self, seconds: float, sliding_window: bool = True) -> int:
    """Tokens of `seconds` of audio; a one-line error below one token, or beyond the trained
    context without a `sliding_window`."""
    n = int(round(seconds * self.tokenizer.frame_rate))
    if n < 1:
      raise configlib.ConfigError(f"--seconds={seconds:g}: shorter than one token "
                                  f"({1 / self.tokenizer.frame_rate:g} s)")
    if n > self.config.model.max_len and not sliding_window:
      raise configlib.ConfigError(
          f"--seconds={seconds:g}: longer than the trained context of "
          f"{self.context_seconds:g} s (and --nosliding_window asks for one window)")
    return n

  def stride_tokens(self, stride_seconds: float = 0.0) -> int:
    """The sliding window's stride in tokens: `stride_seconds`, or half the context for 0."""
    max_len = self.config.model.max_len
    n = int(round(stride_seconds * self.tokenizer.frame_rate)) if stride_seconds else max_len // 2
    if not 0 < n < max_len:
      raise configlib.ConfigError(f"--window_stride={stride_seconds:g}: must be more than 0 and "
                                  f"less than the trained context of {self.context_seconds:g} s")
    return n

  def __call__(self, captions: list[str], seconds: float, seed: int = 0,
               prompt_wav: np.ndarray | None = None, progress: bool = True,
               sliding_window: bool = True, window_stride: float = 0.0
               ) -> tuple[np.ndarray, dict[str, Any]]:
    """Waveforms [B, S] for the captions, and the settings used. Beyond the trained context
    (with `sliding_window`) the window slides by `window_stride` seconds (0: half the context).
    Every argument is checked before the model loads."""
    num_tokens = self.num_tokens(seconds, sliding_window)
    stride = self.stride_tokens(window_stride) if num_tokens > self.config.model.max_len else 0
    prompt = None
    if prompt_wav is not None:
      x = np.asarray(self.tokenizer.encode(prompt_wav[None].astype(np.float32)))
      prompt = np.repeat(latents_lib.normalize(x, self.stats), len(captions), axis=0)
      if prompt.shape[1] >= min(num_tokens, self.config.model.max_len):
        raise configlib.ConfigError(
            f"the prompt covers {prompt.shape[1]} tokens, of {num_tokens} to make in windows of "
            f"{self.config.model.max_len}: nothing is left to generate")
    sampler = self.sampler
    text = self.text_encoder.encode_for_lm(captions)
    x = sampler.generate(text, num_tokens, jax.random.PRNGKey(seed), prompt_BxPxC=prompt,
                         progress=progress, stride=stride)
    wav = np.asarray(self.tokenizer.decode(latents_lib.denormalize(x, self.stats)))
    used = dict(dataclasses.asdict(self.settings), seed=seed, seconds=seconds,
                captions=captions, workdir=os.path.abspath(self.workdir),
                num_tokens=num_tokens, prompt_tokens=0 if prompt is None else prompt.shape[1],
                window=self.config.model.max_len, stride=stride)
    return wav, used
