"""A window that shows frames sent to it, run as its own process.

`--render` cannot open a pygame window in the training process: SDL's X11 display segfaults once
TensorFlow is loaded in the same process (seen with pygame-ce 2.5 and TF 2.21). So the runner
renders `rgb_array` frames and streams them here, to a process that never imports TensorFlow.
Each frame is a 12-byte header (height, width, channels as little-endian uint32) and its bytes;
at the end the window process answers with how many frames it displayed.
"""

import contextlib
import os
import struct
import subprocess
import sys
from typing import BinaryIO

import numpy as np

HEADER = struct.Struct("<III")
FPS = 50


class Viewer:
    """The training side: starts the window process and feeds it frames."""

    def __init__(self, title: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "rlkube.run.viewer", title], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env={**os.environ, "PYGAME_HIDE_SUPPORT_PROMPT": "1"})

    def show(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, np.uint8)
        height, width, channels = frame.shape
        # A closed window breaks the pipe; training goes on without it.
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(HEADER.pack(height, width, channels) + frame.tobytes())

    def close(self) -> int:
        """Close the window; returns how many frames it displayed."""
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        lines = self.process.stdout.read().split()
        self.process.wait(timeout=10)
        return int(lines[-1]) if lines and lines[-1].isdigit() else 0


def _serve(title: str, frames: BinaryIO) -> int:
    import pygame  # noqa: PLC0415  (only the window process needs it)

    pygame.display.init()
    pygame.display.set_caption(title)
    screen = None
    clock = pygame.time.Clock()
    shown = 0
    while header := frames.read(HEADER.size):
        height, width, channels = HEADER.unpack(header)
        frame = np.frombuffer(frames.read(height * width * channels), np.uint8).reshape(height, width, channels)
        if screen is None or screen.get_size() != (width, height):
            screen = pygame.display.set_mode((width, height))
        pygame.surfarray.blit_array(screen, frame[..., :3].swapaxes(0, 1))
        pygame.display.flip()
        shown += 1
        if any(event.type == pygame.QUIT for event in pygame.event.get()):
            break
        clock.tick(FPS)
    return shown


if __name__ == "__main__":
    print(_serve(sys.argv[1] if len(sys.argv) > 1 else "rlkube", sys.stdin.buffer), flush=True)
