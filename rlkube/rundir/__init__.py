"""The run directory: what a copy writes where, atomic checkpoints, and logs kept level with them."""
