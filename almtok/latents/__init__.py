"""3. Prepared latents: the record and shard format, stats.json, and the Grain pipeline."""
