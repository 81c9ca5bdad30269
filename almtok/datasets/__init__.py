"""1. Captioned raw audio: the synthetic generator, the Debian sound catalog, their TFDS
builders."""
