"""almtok: text-to-audio language modelling over continuous-valued audio tokens."""

import os

# TensorFlow (pulled in by TFDS and clu's writers) logs start-up chatter at INFO level.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
