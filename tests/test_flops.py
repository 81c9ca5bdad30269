"""The peak that MFU divides by: the spec table for known accelerators, a median measurement
elsewhere (checked with a fake clock, never the wall clock), and the config's override."""

import itertools

import pytest

from almtok import flops


class _Device:
  def __init__(self, kind):
    self.device_kind = kind


@pytest.mark.parametrize("kind,dtype,want", [
    ("TPU v4", "bfloat16", 275e12),
    ("TPU v5 lite", "bfloat16", 197e12),   # v5e reports itself as 'TPU v5 lite'.
    ("TPU v5p", "bfloat16", 459e12),
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
    ("NVIDIA H100 80GB HBM3", "float32", 494e12),
    ("NVIDIA A100-SXM4-40GB", "float32", 156e12),
    ("NVIDIA L4", "bfloat16", 121e12),
    ("NVIDIA L40S", "bfloat16", None),   # Not an L4: unknown, so measured.
    ("Tesla V100-SXM2-16GB", "bfloat16", None),
    ("cpu", "float32", None),
])
def test_table_lookup(kind, dtype, want):
  assert flops.table_peak(kind, dtype) == want


def test_known_accelerator_uses_the_table_and_never_measures():
  def fail():
    raise AssertionError("measured on a known accelerator")
  peak = flops.peak("bfloat16", device=_Device("TPU v4"), measure=fail)
  assert peak.flops_per_s == 275e12 and "spec sheet" in peak.source


def test_override_wins():
  peak = flops.peak("float32", override=1e12, device=_Device("TPU v4"))
  assert peak == flops.Peak(1e12, "config.train.peak_flops")


def test_cpu_falls_back_to_a_median_estimate():
  peak = flops.peak("float32", device=_Device("cpu"), measure=lambda: 7e10)
  assert peak.flops_per_s == 7e10 and peak.source.startswith("estimate")


def test_measurement_is_the_median_of_its_trials_after_a_warm_up():
  # A fake clock: the warm-up trial is slow (busy threads), then trials take 1, 3, 2, 9, 2 s.
  durations = iter([100.0, 1.0, 3.0, 2.0, 9.0, 2.0])
  ticks = itertools.accumulate(itertools.chain.from_iterable((0.0, d) for d in durations))
  times = iter(list(ticks))
  n, repeats = 64, 4
  got = flops.measure_matmul_peak(n=n, repeats=repeats, trials=5, timer=lambda: next(times))
  assert got == pytest.approx(2 * n ** 3 * repeats / 2.0)


def test_one_counter_gives_the_published_figures():
  # The figures in the README's tables: param_count's per-token FLOPs of `base` and the
  # trainer's FLOPs per step of the demo's `small`, both from this module's counter.
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from almtok import models  # pylint: disable=g-import-not-at-top
  from configs import continuous_lm, synth_small  # pylint: disable=g-import-not-at-top
  base = continuous_lm.get_config("base")
  model = models.abstract(base)
  assert flops.generation_flops(model, base, 100, False)["total"] == pytest.approx(4.389e9,
                                                                                   rel=1e-3)
  assert flops.generation_flops(model, base, 100, True)["total"] == pytest.approx(8.777e9,
                                                                                  rel=1e-3)
  small = synth_small.get_config("size=small")
  graphdef, params = nnx.split(models.abstract(small), nnx.Param)
  assert flops.train_flops_per_step(small, graphdef, params) == pytest.approx(88.6e9, rel=1e-3)
