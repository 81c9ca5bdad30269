"""Evaluation: almtok's own audio tagger, and the metrics that use it (and one that does not)."""
