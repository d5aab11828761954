"""Episode videos: an mp4 (ffmpeg from the imageio-ffmpeg wheel) and a light animated GIF."""

from pathlib import Path

import imageio.v2 as imageio
import numpy as np

FPS = 30
# GIFs are for quick looks in a browser or a README, so they keep every 2nd frame at half size.
GIF_STRIDE = 2


def write_episode(frames: list[np.ndarray], path_without_suffix: Path) -> list[Path]:
    """Write frames as `<path>.mp4` and `<path>.gif`; returns the files written."""
    if not frames:
        return []
    path_without_suffix.parent.mkdir(parents=True, exist_ok=True)
    mp4 = path_without_suffix.with_suffix(".mp4")
    # macro_block_size=1 keeps odd frame sizes instead of resizing with a warning.
    imageio.mimsave(mp4, frames, fps=FPS, macro_block_size=1)
    gif = path_without_suffix.with_suffix(".gif")
    small = [frame[::GIF_STRIDE, ::GIF_STRIDE] for frame in frames[::GIF_STRIDE]]
    imageio.mimsave(gif, small, duration=1000 * GIF_STRIDE / FPS, loop=0)
    return [mp4, gif]
