"""Shared pytest set-up: strict numerics and a parsed absl flag state."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
from absl import flags  # noqa: E402

# Implicit rank promotion hides shape bugs; tests must be explicit.
jax.config.update("jax_numpy_rank_promotion", "raise")

# Grain workers and absl-based code expect parsed flags.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()
