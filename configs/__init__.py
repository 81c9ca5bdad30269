"""Experiment configs: one `get_config(arg)` per file, read by the entry points."""
