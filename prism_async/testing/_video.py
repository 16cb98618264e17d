"""The fake server's video: a tiny, real, playable H.264 MP4, padded to the size asked for.

``clip.mp4`` (next to this module, shipped as package data) is one second of a diagonal colour
gradient whose hue turns once round the colour wheel: 96x64, 24 frames at 24 fps, H.264
Constrained Baseline, yuv420p, no audio, ``moov`` before ``mdat`` (faststart), about 4.5 KB.
It was made with the static ffmpeg 9.0 bundled by ``imageio-ffmpeg`` 0.8.1 (a throwaway venv:
``pip install imageio-ffmpeg``; ``imageio_ffmpeg.get_ffmpeg_exe()``), and ffmpeg decodes it
without error (``ffmpeg -v error -i clip.mp4 -f null -``). To remake it::

    ffmpeg -f lavfi -i "gradients=s=96x64:d=1:r=24:n=2:c0=0xff3030:c1=0x3030ff:x0=0:y0=0:\
x1=95:y1=63:speed=0,hue=H=2*PI*t" -c:v libx264 -profile:v baseline -pix_fmt yuv420p \
-bsf:v filter_units=remove_types=6 -map_metadata -1 -fflags +bitexact -flags:v +bitexact \
-movflags +faststart -an clip.mp4

``filter_units=remove_types=6`` drops x264's SEI (its settings as text, ~600 bytes); the
``bitexact`` flags and ``-map_metadata -1`` keep encoder versions and dates out, so the same
ffmpeg rebuilds the same bytes.
"""

from __future__ import annotations

import struct
from functools import cache
from importlib.resources import files

__all__ = ["fake_video"]

_FREE_HEADER = 8
"""Bytes of a ``free`` box header with a 32-bit size: the least padding there can be."""


@cache
def _clip() -> bytes:
    """The bundled clip's bytes, read once."""
    return (files("prism_async.testing") / "clip.mp4").read_bytes()


def _free_header(box_size: int) -> bytes:
    """The header of an ISO BMFF ``free`` box of ``box_size`` bytes in all (header included).

    A 32-bit size when it fits; otherwise size 1 and a 64-bit ``largesize`` (16 bytes).
    """
    if box_size < _FREE_HEADER:
        raise ValueError(f"a free box is at least {_FREE_HEADER} bytes, not {box_size}")
    if box_size <= 0xFFFFFFFF:
        return struct.pack(">I4s", box_size, b"free")
    return struct.pack(">I4sQ", 1, b"free", box_size)


def fake_video(size: int) -> bytes:
    """A real, playable MP4 of exactly ``size`` bytes when it can be, else the bare clip.

    The result starts with the bundled one-second H.264 clip (``ftyp``, ``moov``, ``mdat``).
    When ``size`` is at least the clip's length + 8, a trailing ISO BMFF ``free`` box (zeros)
    pads it to exactly ``size`` bytes; players and demuxers skip ``free`` boxes, so the padded
    file still plays, and the clip's chunk offsets, which point into its ``mdat``, stay valid.

    Otherwise the clip is returned unpadded: no smaller valid MP4 exists, and a box needs at
    least 8 bytes of header, so the result is then *longer* than ``size`` when ``size`` is below
    the clip's length (a few KB), and up to 7 bytes *shorter* when ``size`` is just above it.

    Args:
        size: the length wanted, in bytes.

    Returns:
        The video's bytes (the same for the same ``size``).
    """
    clip = _clip()
    padding = size - len(clip)
    if padding < _FREE_HEADER:
        return clip
    header = _free_header(padding)
    return clip + header + bytes(padding - len(header))
