"""Keyframes of a video, read from its container (MP4 and MOV), without decoding.

An archive job cuts a long video into segments that start at keyframes, so that a decoder starting a
segment begins at a keyframe rather than decoding the frames before it only to drop them. The sync-sample table (``stss``) lists the keyframes in decode
order; with B-frames, decode order is not display order, so each sample's composition time (``stts`` plus
``ctts``) gives its place in display order, the order frames are numbered in.
"""
from __future__ import annotations

import struct

import numpy as np

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}
MAX_MOOV = 1 << 28  # a moov box past 256 MiB is not read (an hour at 30 fr/s holds ~2 MB of tables)


def _header(head: bytes, at: int, room: int):
    """(size, type, header length) of the box whose header starts at head[at:], ``room`` bytes from there to
    the end of its parent; None where it is cut short or malformed (a 64-bit size follows a size of 1; size 0
    runs to the parent's end)."""
    if len(head) < at + 8:
        return None
    size, kind = struct.unpack_from(">I4s", head, at)
    hl = 8
    if size == 1:
        if len(head) < at + 16:
            return None
        size, hl = struct.unpack_from(">Q", head, at + 8)[0], 16
    elif size == 0:
        size = room
    return None if size < hl or size > room else (size, kind, hl)


def _boxes(buf: bytes, start: int, end: int):
    """(type, payload start, box end) of the boxes in buf[start:end]."""
    i = start
    while (h := _header(buf, i, end - i)) is not None:
        size, kind, hl = h
        yield kind, i + hl, i + size
        i += size


def _moov(path: str) -> bytes | None:
    """The moov box's bytes (the top level is walked by seeking, so mdat is never read)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        total = f.tell()
        pos = 0
        while pos < total:
            f.seek(pos)
            h = _header(f.read(16), 0, total - pos)
            if h is None:
                return None
            size, kind, _ = h
            if kind == b"moov":
                if size > MAX_MOOV:
                    return None
                f.seek(pos)
                return f.read(size)
            pos += size
    return None


def _tables(buf: bytes, start: int, end: int, out: dict):
    """Collects the video track's hdlr type and sample tables under buf[start:end] into out."""
    for kind, p, e in _boxes(buf, start, end):
        if kind == b"trak":
            track: dict = {}
            _tables(buf, p, e, track)
            if track.get("hdlr") == b"vide" and "stts" in track and "video" not in out:
                out["video"] = track
        elif kind in _CONTAINERS:
            _tables(buf, p, e, out)
        elif kind == b"hdlr":
            out.setdefault("hdlr", buf[p + 8:p + 12])  # mdia's handler; minf's names the data reference
        elif kind in (b"stts", b"ctts", b"stss"):
            n = struct.unpack_from(">I", buf, p + 4)[0]
            width = 1 if kind == b"stss" else 2
            if p + 8 + 4 * width * n > e:
                continue
            a = np.frombuffer(buf, dtype=">u4", count=width * n, offset=p + 8).reshape(n, width).astype(np.int64)
            if kind == b"ctts":  # composition offsets are signed (version 1; version 0 files write them so too)
                a[:, 1] = a[:, 1].astype(np.uint32).view(np.int32)
            out[kind.decode()] = a


def keyframes(path: str) -> list[int] | None:
    """The display-order indices of ``path``'s keyframes (0 first), or None where they cannot be read (not
    MP4/MOV, a fragmented MP4, no video track). A track without a sync-sample table is all keyframes."""
    try:
        buf = _moov(path)
    except OSError:
        return None
    if buf is None:
        return None
    found: dict = {}
    _tables(buf, 8, len(buf), found)
    track = found.get("video")
    if track is None:
        return None
    stts = track["stts"]
    n = int(stts[:, 0].sum())
    if n == 0:
        return None
    dts = np.concatenate([[0], np.cumsum(np.repeat(stts[:, 1], stts[:, 0]))[:-1]])
    cts = dts.copy()
    if "ctts" in track:
        off = np.repeat(track["ctts"][:, 1], track["ctts"][:, 0])[:n]
        cts[:len(off)] += off
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(cts, kind="stable")] = np.arange(n)
    if "stss" not in track:
        return list(range(n))
    sync = track["stss"][:, 0] - 1
    sync = sync[(sync >= 0) & (sync < n)]
    return sorted(int(k) for k in rank[sync])

