"""Discretisers over continuous latents (residual VQ) for the discrete baseline."""
