"""Read the pixels of a PNG (Chromium's screenshots) with the standard
library: 8-bit RGB or RGBA, not interlaced. Enough for a test to ask
"are lines of two colours drawn in the chart area?" without an imaging
dependency."""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows): each row is width*3 bytes of RGB."""
    data = path.read_bytes()
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"{path} is not a PNG")
    pos, idat, header = len(_SIGNATURE), [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path} has no IHDR")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"{path}: only 8-bit RGB/RGBA, not interlaced (depth={depth} colour={colour})")
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, previous, at = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[at], bytearray(raw[at + 1:at + 1 + stride])
        at += 1 + stride
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            corner = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + pred) & 0xFF
            elif kind != 0:
                raise ValueError(f"{path}: bad filter {kind}")
        previous = line
        rows.append(bytes(line) if bpp == 3 else bytes(b for j in range(0, stride, 4) for b in line[j:j + 3]))
    return width, height, rows


def saturated_colours(path: Path, box: tuple[int, int, int, int]) -> Counter:
    """How many pixels of each strongly coloured (not grey) RGB, rounded to
    a 16-step grid, lie in box = (left, top, right, bottom)."""
    _, _, rows = pixels(path)
    left, top, right, bottom = box
    found: Counter = Counter()
    for row in rows[top:bottom]:
        for x in range(left, min(right, len(row) // 3)):
            r, g, b = row[3 * x:3 * x + 3]
            if max(r, g, b) - min(r, g, b) >= 90:
                found[(r >> 4 << 4, g >> 4 << 4, b >> 4 << 4)] += 1
    return found


def near(colour: tuple[int, int, int], other: tuple[int, int, int], within: int = 40) -> bool:
    return all(abs(a - b) <= within for a, b in zip(colour, other))


def column_colours(path: Path, x: int, top: int, bottom: int, least: int = 8) -> list[tuple[int, int, int]]:
    """The solid colours down column x (e.g. the run checkboxes of
    TensorBoard's sidebar), one per block of at least `least` pixels of one
    strong colour (not grey), top to bottom; anti-aliased edges are not
    blocks."""
    _, _, rows = pixels(path)
    found: list[tuple[int, int, int]] = []
    block: list[tuple[int, int, int]] = []
    for row in [*rows[top:bottom], b"\xff" * (3 * (x + 1))]:
        r, g, b = row[3 * x:3 * x + 3]
        colour = (r, g, b) if max(r, g, b) - min(r, g, b) >= 90 else None
        if colour and block and near(colour, block[0], 8):
            block.append(colour)
            continue
        if len(block) >= least and not any(near(block[0], seen, 8) for seen in found):
            found.append(block[0])
        block = [colour] if colour else []
    return found


def count_near(path: Path, colour: tuple[int, int, int], box: tuple[int, int, int, int], within: int = 24) -> int:
    """How many pixels in box = (left, top, right, bottom) are close to colour."""
    _, _, rows = pixels(path)
    left, top, right, bottom = box
    return sum(
        1
        for row in rows[top:bottom]
        for x in range(left, min(right, len(row) // 3))
        if near(tuple(row[3 * x:3 * x + 3]), colour, within)
    )
