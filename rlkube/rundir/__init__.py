"""The run directory: what a copy writes where (layout), atomic checkpoints, logs kept level with them, and how far
the copy has got (progress_record)."""
