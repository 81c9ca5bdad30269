"""Frozen text encoders that turn captions into a conditioning prefix."""

from almtok.text.minilm import (
    MiniLM,
    MiniLMConfig,
    TextEmbedding,
    TextEncoder,
    load_minilm,
    mean_pool_normalized,
)
from almtok.text.tokenizer import MiniLMTokenizer

__all__ = [
    "MiniLM",
    "MiniLMConfig",
    "MiniLMTokenizer",
    "TextEmbedding",
    "TextEncoder",
    "load_minilm",
    "mean_pool_normalized",
]
