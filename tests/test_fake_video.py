"""fake_video: the fake server's video is a real MP4, checked box by box (ISO BMFF, ISO 14496-12).

A small parser written here reads the box tree (32-bit size + type, 64-bit ``largesize`` when
size is 1, to the end of the file when size is 0) and fails on any box that overruns its parent,
so a parse is itself a check that boxes tile their parent. The structural tests run on the bare
clip and on a padded video, which must stay just as valid.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from itertools import pairwise

import pytest

from prism_async.testing import _video
from prism_async.testing._video import fake_video

CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"})
WIDTH, HEIGHT = 96, 64
PADDED = 262144
CLIP = (files("prism_async.testing") / "clip.mp4").read_bytes()


@dataclass(frozen=True)
class Box:
    type: bytes
    start: int
    """Offset of the box's first byte (its size field) in the file."""
    header: int
    """Bytes of size + type (+ largesize)."""
    size: int
    """Whole box, header included."""
    children: tuple[Box, ...]

    @property
    def body(self) -> int:
        """Offset of the payload's first byte."""
        return self.start + self.header

    @property
    def end(self) -> int:
        return self.start + self.size


def read_header(data: bytes, offset: int, end: int) -> tuple[bytes, int, int]:
    """(type, header length, box size) of the box at ``offset``; ``end`` bounds a size of 0."""
    if end - offset < 8:
        raise ValueError(f"{end - offset} bytes left at {offset}: too few for a box header")
    size, kind = struct.unpack_from(">I4s", data, offset)
    header = 8
    if size == 1:
        if end - offset < 16:
            raise ValueError(f"no room for the largesize of {kind!r} at {offset}")
        (size,) = struct.unpack_from(">Q", data, offset + 8)
        header = 16
    elif size == 0:
        size = end - offset
    if size < header:
        raise ValueError(f"box {kind!r} at {offset} claims {size} bytes, less than its header")
    return kind, header, size


def parse(data: bytes, start: int = 0, end: int | None = None) -> tuple[Box, ...]:
    """The boxes tiling ``data[start:end]``, descending into CONTAINERS."""
    end = len(data) if end is None else end
    boxes = []
    offset = start
    while offset < end:
        kind, header, size = read_header(data, offset, end)
        if offset + size > end:
            raise ValueError(f"box {kind!r} at {offset} ({size} bytes) overruns its parent")
        children = parse(data, offset + header, offset + size) if kind in CONTAINERS else ()
        boxes.append(Box(kind, offset, header, size, children))
        offset += size
    return tuple(boxes)


def walk(boxes: tuple[Box, ...]) -> Iterator[Box]:
    for box in boxes:
        yield box
        yield from walk(box.children)


def only(boxes: tuple[Box, ...], kind: bytes) -> Box:
    """The single box of type ``kind`` among ``boxes`` and their descendants."""
    found = [box for box in walk(boxes) if box.type == kind]
    assert len(found) == 1, f"{len(found)} {kind!r} boxes"
    return found[0]


def child(box: Box, kind: bytes) -> Box:
    found = [c for c in box.children if c.type == kind]
    assert len(found) == 1, f"{len(found)} {kind!r} boxes in {box.type!r}"
    return found[0]


def full_box_table(data: bytes, box: Box, row: str) -> list[tuple[int, ...]]:
    """Rows of a FullBox whose payload is version/flags, a 32-bit entry count, then entries."""
    (count,) = struct.unpack_from(">I", data, box.body + 4)
    width = struct.calcsize(row)
    assert box.body + 8 + count * width <= box.end, f"{box.type!r} table overruns its box"
    return [struct.unpack_from(row, data, box.body + 8 + i * width) for i in range(count)]


def video_track(data: bytes, boxes: tuple[Box, ...]) -> Box:
    moov = next(box for box in boxes if box.type == b"moov")
    videos = []
    for trak in (c for c in moov.children if c.type == b"trak"):
        hdlr = child(child(trak, b"mdia"), b"hdlr")
        (handler,) = struct.unpack_from(">4s", data, hdlr.body + 8)  # after version/flags, 0
        if handler == b"vide":
            videos.append(trak)
    assert len(videos) == 1, f"{len(videos)} video tracks"
    return videos[0]


def sample_sizes(data: bytes, stbl: Box) -> list[int]:
    stsz = child(stbl, b"stsz")
    uniform, count = struct.unpack_from(">II", data, stsz.body + 4)
    if uniform:
        return [uniform] * count
    assert stsz.body + 12 + 4 * count <= stsz.end
    return list(struct.unpack_from(f">{count}I", data, stsz.body + 12))


def chunk_offsets(data: bytes, stbl: Box) -> list[int]:
    kinds = {c.type for c in stbl.children}
    assert len(kinds & {b"stco", b"co64"}) == 1, "need exactly one of stco, co64"
    if b"stco" in kinds:
        return [row[0] for row in full_box_table(data, child(stbl, b"stco"), ">I")]
    return [row[0] for row in full_box_table(data, child(stbl, b"co64"), ">Q")]


@pytest.fixture(params=["clip", "padded"])
def video(request: pytest.FixtureRequest) -> bytes:
    return fake_video(0) if request.param == "clip" else fake_video(PADDED)


@pytest.fixture
def boxes(video: bytes) -> tuple[Box, ...]:
    return parse(video)


# -- the parser itself --------------------------------------------------------------------------


def test_parser_reads_largesize_and_rejects_overruns() -> None:
    large = struct.pack(">I4sQ", 1, b"free", 16 + 3) + b"abc"
    tail = struct.pack(">I4s", 8, b"skip")
    assert [(b.type, b.header, b.size) for b in parse(large + tail)] == [
        (b"free", 16, 19),
        (b"skip", 8, 8),
    ]
    with pytest.raises(ValueError, match="overruns"):
        parse(struct.pack(">I4s", 9, b"free"))
    with pytest.raises(ValueError, match="less than its header"):
        parse(struct.pack(">I4s", 7, b"free"))


# -- the clip's structure, bare and padded ------------------------------------------------------


def test_top_level_boxes_tile_the_file(video: bytes, boxes: tuple[Box, ...]) -> None:
    assert sum(box.size for box in boxes) == len(video)
    assert boxes[0].start == 0
    assert all(a.end == b.start for a, b in pairwise(boxes))


def test_faststart_order(video: bytes, boxes: tuple[Box, ...]) -> None:
    # ffmpeg's muxer always leaves an empty 8-byte free box before mdat (room for a 64-bit
    # mdat size); free boxes aside, the order is ftyp, moov (faststart), mdat.
    assert [box.type for box in boxes if box.type != b"free"] == [b"ftyp", b"moov", b"mdat"]
    assert all(box.size == 8 for box in boxes if box.type == b"free" and box.end <= len(CLIP))
    if len(video) > len(CLIP):  # then the padding: one free box after the clip's mdat
        assert [(box.type, box.start) for box in boxes[-2:]] == [
            (b"mdat", boxes[-2].start),
            (b"free", len(CLIP)),
        ]
    else:
        assert boxes[-1].type == b"mdat"


def test_ftyp_major_brand(video: bytes, boxes: tuple[Box, ...]) -> None:
    ftyp = boxes[0]
    (major,) = struct.unpack_from(">4s", video, ftyp.body)
    assert major in {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1"}


def test_movie_lasts_about_one_second(video: bytes, boxes: tuple[Box, ...]) -> None:
    mvhd = only(boxes, b"mvhd")
    version = video[mvhd.body]
    if version == 1:
        timescale, duration = struct.unpack_from(">IQ", video, mvhd.body + 4 + 16)
    else:
        timescale, duration = struct.unpack_from(">II", video, mvhd.body + 4 + 8)
    assert timescale > 0
    assert 0.9 <= duration / timescale <= 1.1


def test_one_video_track_and_nothing_else(video: bytes, boxes: tuple[Box, ...]) -> None:
    trak = video_track(video, boxes)
    moov = boxes[1]
    assert [c for c in moov.children if c.type == b"trak"] == [trak]  # no audio


def test_avc1_sample_entry_with_the_clip_size(video: bytes, boxes: tuple[Box, ...]) -> None:
    stbl = only(video_track(video, boxes).children, b"stbl")
    stsd = child(stbl, b"stsd")
    (entries,) = struct.unpack_from(">I", video, stsd.body + 4)
    assert entries == 1
    kind, header, size = read_header(video, stsd.body + 8, stsd.end)
    entry = stsd.body + 8
    assert kind == b"avc1"
    # VisualSampleEntry: reserved 6, data_reference_index 2, pre_defined/reserved 16, w, h.
    assert struct.unpack_from(">HH", video, entry + header + 24) == (WIDTH, HEIGHT)
    # Its 78 fixed bytes are followed by boxes, avcC first: version 1, then the profile.
    avcc = parse(video, entry + header + 78, entry + size)
    assert avcc[0].type == b"avcC"
    assert video[avcc[0].body] == 1
    assert video[avcc[0].body + 1] in {66, 77}  # Baseline, Main


def test_track_header_has_the_clip_size(video: bytes, boxes: tuple[Box, ...]) -> None:
    tkhd = child(video_track(video, boxes), b"tkhd")
    # Width and height (16.16 fixed point) are the FullBox's last 8 bytes.
    assert struct.unpack_from(">II", video, tkhd.end - 8) == (WIDTH << 16, HEIGHT << 16)


def test_several_frames_fitting_in_mdat(video: bytes, boxes: tuple[Box, ...]) -> None:
    stbl = only(video_track(video, boxes).children, b"stbl")
    sizes = sample_sizes(video, stbl)
    mdat = only(boxes, b"mdat")
    assert len(sizes) > 1  # animated
    assert all(size > 0 for size in sizes)
    assert sum(sizes) <= mdat.size - mdat.header
    stts = full_box_table(video, child(stbl, b"stts"), ">II")
    assert sum(count for count, _delta in stts) == len(sizes)


def test_chunk_offsets_point_inside_mdat(video: bytes, boxes: tuple[Box, ...]) -> None:
    mdat = only(boxes, b"mdat")
    offsets = chunk_offsets(video, only(video_track(video, boxes).children, b"stbl"))
    assert offsets
    assert all(mdat.body <= offset < mdat.end for offset in offsets)


def test_every_sample_lies_inside_mdat(video: bytes, boxes: tuple[Box, ...]) -> None:
    stbl = only(video_track(video, boxes).children, b"stbl")
    offsets = chunk_offsets(video, stbl)
    sizes = iter(sample_sizes(video, stbl))
    runs = full_box_table(video, child(stbl, b"stsc"), ">III")  # first chunk, per chunk, sdi
    assert runs
    assert runs[0][0] == 1
    mdat = only(boxes, b"mdat")
    spans = []
    for number, offset in enumerate(offsets, start=1):
        per_chunk = next(per for first, per, _sdi in reversed(runs) if first <= number)
        for _ in range(per_chunk):
            size = next(sizes)
            spans.append((offset, offset + size))
            offset += size
    assert next(sizes, None) is None, "samples left over after the last chunk"
    assert all(mdat.body <= start and stop <= mdat.end for start, stop in spans)
    spans.sort()
    assert all(a[1] <= b[0] for a, b in pairwise(spans)), "samples overlap"


# -- padding ------------------------------------------------------------------------------------


def test_padded_to_exactly_the_size_with_one_free_box() -> None:
    video = fake_video(PADDED)
    assert len(video) == PADDED
    assert video[: len(CLIP)] == CLIP
    (free,) = parse(video, len(CLIP))  # one box after the clip, reaching the end
    assert (free.type, free.header, free.end) == (b"free", 8, PADDED)
    assert video[free.body :] == bytes(free.end - free.body)
    assert parse(video)[-1] == free


@pytest.mark.parametrize("extra", [8, 9, 1000])
def test_smallest_paddings(extra: int) -> None:
    video = fake_video(len(CLIP) + extra)
    assert len(video) == len(CLIP) + extra
    assert video.startswith(CLIP)
    assert [(box.type, box.size) for box in parse(video, len(CLIP))] == [(b"free", extra)]


@pytest.mark.parametrize("size", [-1, 0, 10, len(CLIP) - 1, len(CLIP)])
def test_too_small_for_the_clip_returns_the_whole_clip(size: int) -> None:
    assert fake_video(size) == CLIP


@pytest.mark.parametrize("extra", [1, 7])
def test_no_room_for_a_free_box_returns_the_clip(extra: int) -> None:
    assert fake_video(len(CLIP) + extra) == CLIP


def test_free_header_switches_to_largesize_past_32_bits() -> None:
    small = _video._free_header(0xFFFFFFFF)
    assert read_header(small, 0, 0xFFFFFFFF) == (b"free", 8, 0xFFFFFFFF)
    large = _video._free_header(1 << 32)
    assert read_header(large, 0, 1 << 32) == (b"free", 16, 1 << 32)
    with pytest.raises(ValueError, match="at least 8"):
        _video._free_header(7)


def test_clip_is_read_once() -> None:
    _video._clip.cache_clear()
    assert fake_video(0) == CLIP
    assert fake_video(PADDED).startswith(CLIP)
    info = _video._clip.cache_info()
    assert (info.misses, info.hits) == (1, 1)
