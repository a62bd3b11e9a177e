"""Is a frame file whole? Cheap structural checks per image format (pure).

After Effects writes a frame in place, so a render killed mid-write leaves a file of
non-zero size that is not a frame. Where the format allows it cheaply, the file's own
structure says whether it was finished:

* PNG ends with the ``IEND`` chunk; JPEG ends with the EOI marker ``FF D9``.
* OpenEXR (single-part scanline) has an offset table that the writer fills in last:
  every offset must be set and the last chunk must end inside the file.
* TIFF's first IFD (written after the pixels) and its strips must lie inside the file.
* DPX declares its total file size in the header; so do BMP, IFF (its ``FORM``
  chunk) and an uncompressed Targa or SGI (width x height x depth). A Cineon must hold
  the pixels its header describes (its size field is not trusted).
* Photoshop (PSD/PSB) and run-length SGI list the length of every compressed row:
  every one must be filled in and the rows must end inside the file. A run-length
  Targa is walked packet by packet, a Radiance HDR scanline by scanline.

Other formats (and layouts these checks do not parse: tiled or multi-part EXR,
BigTIFF, ZIP-compressed Photoshop data) are only checked for being non-empty. Nothing
here touches a file: callers pass ``read(offset, length)``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

#: ``read(offset, length)`` -> at most ``length`` bytes at ``offset`` (short at end of file)
Reader = Callable[[int, int], bytes]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
EXR_MAGIC = b"\x76\x2f\x31\x01"
#: scanlines per chunk by OpenEXR compression id (NO, RLE, ZIPS, ZIP, PIZ, PXR24, B44,
#: B44A, DWAA, DWAB)
EXR_LINES = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}
_EXR_HEADER_MAX = 1 << 20


def extension(path: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def can_check(path: str) -> bool:
    """Whether the frame's format says where it ends (else a non-empty file counts)."""
    return extension(path) in _CHECKS


def frame_problem(path: str, size: int, read: Reader) -> str | None:
    """Why the file at ``path`` (``size`` bytes) is not a whole frame, or None if it is."""
    if size <= 0:
        return "empty file"
    check = _CHECKS.get(extension(path))
    return check(size, read) if check is not None else None


_SLACK = 64  #: bytes some writers leave after the end marker (padding, a stray trailer)


def _png(size: int, read: Reader) -> str | None:
    if read(0, 8) != PNG_SIGNATURE:
        return "not a PNG (bad signature)"
    # IEND (with its CRC) only ever appears as the last chunk
    if size < 8 + 12 or PNG_IEND not in read(max(8, size - 12 - _SLACK), 12 + _SLACK):
        return "truncated PNG (no IEND chunk at the end)"
    return None


def _jpeg(size: int, read: Reader) -> str | None:
    if read(0, 2) != b"\xff\xd8":
        return "not a JPEG (no SOI marker)"
    # the scan data never holds FF D9 (0xFF is stuffed), so EOI near the end means done;
    # only NUL padding may follow it
    tail = read(max(2, size - 2 - _SLACK), 2 + _SLACK).rstrip(b"\x00")
    if size < 4 or not tail.endswith(b"\xff\xd9"):
        return "truncated JPEG (no EOI marker at the end)"
    return None


def _exr(size: int, read: Reader) -> str | None:
    head = read(0, min(size, _EXR_HEADER_MAX))
    if head[:4] != EXR_MAGIC:
        return "not an OpenEXR file (bad magic number)"
    if len(head) < 8:
        return "truncated OpenEXR header"
    flags = struct.unpack_from("<I", head, 4)[0]
    if flags & (0x200 | 0x800 | 0x1000):  # tiled, deep or multi-part: magic only
        return None
    attrs, end = _exr_attributes(head)
    if end is None:
        return "truncated OpenEXR header"
    window, compression = attrs.get(("dataWindow", "box2i")), attrs.get(("compression",
                                                                         "compression"))
    if window is None or len(window) != 16 or compression is None or len(compression) != 1:
        return None  # a header this check does not understand: trust it
    _, ymin, _, ymax = struct.unpack("<4i", window)
    lines = EXR_LINES.get(compression[0])
    if lines is None or ymax < ymin:
        return None
    count = math.ceil((ymax - ymin + 1) / lines)
    table = read(end, 8 * count)
    if len(table) < 8 * count:
        return "truncated OpenEXR file (offset table incomplete)"
    offsets = struct.unpack(f"<{count}Q", table)
    if any(o < end + 8 * count or o + 8 > size for o in offsets):
        return "truncated OpenEXR file (offset table not filled in)"
    last = max(offsets)
    _, length = struct.unpack("<iI", read(last, 8))
    if last + 8 + length > size:
        return "truncated OpenEXR file (last chunk cut short)"
    return None


def _exr_attributes(head: bytes) -> tuple[dict[tuple[str, str], bytes], int | None]:
    """Header attributes ``(name, type) -> value`` and the offset after the header."""
    attrs: dict[tuple[str, str], bytes] = {}
    pos = 8
    while pos < len(head):
        if head[pos] == 0:
            return attrs, pos + 1
        name_end = head.find(b"\x00", pos)
        type_end = head.find(b"\x00", name_end + 1) if name_end >= 0 else -1
        if type_end < 0 or type_end + 5 > len(head):
            return attrs, None
        (length,) = struct.unpack_from("<i", head, type_end + 1)
        start = type_end + 5
        if length < 0 or start + length > len(head):
            return attrs, None
        key = (head[pos:name_end].decode("latin-1"), head[name_end + 1:type_end].decode("latin-1"))
        attrs[key] = head[start:start + length]
        pos = start + length
    return attrs, None


_TIFF_SIZES = {3: 2, 4: 4, 16: 8}  # SHORT, LONG, LONG8
#: bytes per value by TIFF field type (BYTE, ASCII, SHORT, LONG, RATIONAL, SBYTE, UNDEFINED,
#: SSHORT, SLONG, SRATIONAL, FLOAT, DOUBLE, IFD)
_TIFF_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
                    13: 4}


def _tiff(size: int, read: Reader) -> str | None:
    head = read(0, 8)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 8:
        return "not a TIFF file (bad byte order mark)"
    (magic,) = struct.unpack_from(order + "H", head, 2)
    if magic == 43:  # BigTIFF: header only
        return None
    if magic != 42:
        return "not a TIFF file (bad magic number)"
    (ifd,) = struct.unpack_from(order + "I", head, 4)
    if ifd < 8 or ifd + 2 > size:
        return "truncated TIFF (first IFD missing)"
    (n,) = struct.unpack(order + "H", read(ifd, 2))
    entries = read(ifd + 2, 12 * n)
    if ifd + 2 + 12 * n + 4 > size or len(entries) < 12 * n:
        return "truncated TIFF (first IFD cut short)"
    tags: dict[int, list[int]] = {}
    for i in range(n):
        tag, typ, count = struct.unpack_from(order + "HHI", entries, 12 * i)
        need = _TIFF_TYPE_BYTES.get(typ, 1) * count
        if need > 4:  # the value lives elsewhere in the file: it must be there
            (where,) = struct.unpack_from(order + "I", entries, 12 * i + 8)
            if where + need > size:
                return "truncated TIFF (a tag's value cut short)"
        width = _TIFF_SIZES.get(typ)
        if tag not in (273, 279, 324, 325) or width is None or count > 1 << 20:
            continue
        raw = entries[12 * i + 8:12 * i + 12]
        if width * count > 4:
            (where,) = struct.unpack(order + "I", raw)
            raw = read(where, width * count)
            if len(raw) < width * count:
                return "truncated TIFF (strip table cut short)"
        code = {2: "H", 4: "I", 8: "Q"}[width]
        tags[tag] = list(struct.unpack(f"{order}{count}{code}", raw[:width * count]))
    for offsets_tag, counts_tag in ((273, 279), (324, 325)):
        offs, lens = tags.get(offsets_tag), tags.get(counts_tag)
        if offs and lens and max(o + c for o, c in zip(offs, lens, strict=False)) > size:
            return "truncated TIFF (image data cut short)"
    return None


#: components per pixel of a DPX image element, by its descriptor (user-defined: 1)
_DPX_COMPONENTS = {50: 3, 51: 4, 52: 4, 100: 2, 101: 3, 102: 3, 103: 4}


def _dpx_line_bytes(samples: int, bits: int, packing: int) -> int:
    """The fewest bytes one line of ``samples`` can take as DPX lays it out: 10 bits
    filled into 32-bit words three at a time (methods A and B: a line starts on a word),
    12 bits filled into 16, anything else packed bit to bit. Writers that also pad lines
    to 32 bits (ImageMagick's 8-bit ones) only add: the pad is not counted."""
    if bits == 10 and packing in (1, 2):
        return -(-samples // 3) * 4
    if bits == 12 and packing in (1, 2):
        return samples * 2
    return -(-samples * bits // 8)


def _dpx(size: int, read: Reader) -> str | None:
    """The declared file size is not enough: ImageMagick's writer declares one byte a
    sample whatever the depth (a 10-bit file's last quarter went unchecked). The first
    image element's pixels, as its descriptor, depth and packing lay them out, must fit
    too (a lower bound: line padding and further elements only add; run-length encoded
    elements are left to the declared size)."""
    head = read(0, 812)
    order = {b"SDPX": ">", b"XPDS": "<"}.get(head[:4])
    if order is None or len(head) < 20:
        return "not a DPX file (bad magic number)"
    image_offset, declared = struct.unpack_from(order + "I", head, 4)[0], struct.unpack_from(
        order + "I", head, 16)[0]
    need = max(declared, image_offset)
    if len(head) >= 812:
        elements, width, lines = struct.unpack_from(order + "HII", head, 770)
        descriptor, bits = head[800], head[803]
        packing, encoding, data_offset = struct.unpack_from(order + "HHI", head, 804)
        if elements and encoding == 0:
            samples = width * _DPX_COMPONENTS.get(descriptor, 1)
            start = data_offset or image_offset
            need = max(need, start + lines * _dpx_line_bytes(samples, bits, packing))
    if size < need:
        return f"truncated DPX ({size} of at least {need} bytes)"
    return None


def _cineon(size: int, read: Reader) -> str | None:
    """Cineon's total-size field is not trusted (ImageMagick's writer declares more than
    it writes): the pixels its image header describes — channel 0's pixels per line,
    lines and bits, times the channel count — must fit after the image offset, however
    they are packed (packing only adds padding, so this never refuses a whole file; a
    cut inside the last few per cent of 10-bit data packed in 32-bit words goes unseen)."""
    head = read(0, 208)
    order = {b"\x80\x2a\x5f\xd7": ">", b"\xd7\x5f\x2a\x80": "<"}.get(head[:4])
    if order is None or len(head) < 208:
        return "not a Cineon file (bad magic number)"
    (image_offset,) = struct.unpack_from(order + "I", head, 4)
    channels, bits = head[193], head[198]
    pixels, lines = struct.unpack_from(order + "II", head, 200)
    need = image_offset + lines * pixels * channels * bits // 8
    return None if size >= need else f"truncated Cineon file ({size} of at least {need} bytes)"


def _tga(size: int, read: Reader) -> str | None:
    head = read(0, 18)
    if len(head) < 18:
        return "truncated Targa (no header)"
    id_len, cmap_type, kind, _first, cmap_len, cmap_bits, _x, _y, width, height, depth, _d = (
        struct.unpack("<BBBHHBHHHHBB", head))
    if kind not in (1, 2, 3, 9, 10, 11) or cmap_type not in (0, 1) or width == 0 or height == 0:
        return "not a Targa image (bad header)"
    start = 18 + id_len + cmap_len * ((cmap_bits + 7) // 8)
    pixel = (depth + 7) // 8
    if kind in (1, 2, 3):  # uncompressed: the size follows from the header
        need = start + width * height * pixel
        return None if size >= need else f"truncated Targa ({size} of {need} bytes)"
    # run-length encoded: walk the packets until every pixel is accounted for
    data = read(start, max(0, size - start))
    left, at = width * height, 0
    while left > 0:
        if at >= len(data):
            return "truncated Targa (run-length data ends early)"
        count = (data[at] & 0x7F) + 1
        at += 1 + (pixel if data[at] & 0x80 else count * pixel)
        left -= count
    if len(data) < at:
        return f"truncated Targa ({start + len(data)} of {start + at} bytes)"
    return None


def _bmp(size: int, read: Reader) -> str | None:
    head = read(0, 14)
    if len(head) < 14 or head[:2] != b"BM":
        return "not a BMP (bad signature)"
    declared, _r1, _r2, offset = struct.unpack_from("<IHHI", head, 2)
    if size < max(declared, offset):
        return f"truncated BMP ({size} of {declared} bytes)"
    return None


def _psd(size: int, read: Reader) -> str | None:
    """Header, three length-prefixed sections, then the merged image: raw (its size
    follows from the header) or run-length (a table of every row's length, which a
    writer may fill in last: a zero length is a row not written yet)."""
    head = read(0, 26)
    if len(head) < 26 or head[:4] != b"8BPS":
        return "not a Photoshop file (bad signature)"
    version, channels, height, width, depth = struct.unpack_from(">H6xHIIH", head, 4)
    if version not in (1, 2) or not channels or not height or not width:
        return "not a Photoshop file (bad header)"
    at = 26
    for length_bytes in (4, 4, 4 * version):  # colour mode data, image resources, layers
        raw = read(at, length_bytes)
        if len(raw) < length_bytes:
            return "truncated Photoshop file (a section cut short)"
        at += length_bytes + int.from_bytes(raw, "big")
    compression = read(at, 2)
    if len(compression) < 2:
        return "truncated Photoshop file (no image data)"
    kind = struct.unpack(">H", compression)[0]
    at += 2
    rows = channels * height
    if kind == 0:
        need = at + rows * ((width * depth + 7) // 8)
    elif kind == 1:
        width_bytes = 2 * version
        table = read(at, rows * width_bytes)
        if len(table) < rows * width_bytes:
            return "truncated Photoshop file (row length table cut short)"
        lengths = struct.unpack(f">{rows}{'H' if version == 1 else 'I'}", table)
        if 0 in lengths:
            return "truncated Photoshop file (row length table not filled in)"
        need = at + len(table) + sum(lengths)
    else:  # zip: the data runs to the end of the file
        return None
    return None if size >= need else f"truncated Photoshop file ({size} of {need} bytes)"


def _sgi(size: int, read: Reader) -> str | None:
    head = read(0, 12)
    if len(head) < 12:
        return "truncated SGI image (no header)"
    magic, storage, bpc, dimension, x, y, z = struct.unpack(">hBBHHHH", head)
    if magic != 474 or storage not in (0, 1) or bpc not in (1, 2) or not 1 <= dimension <= 3:
        return "not an SGI image (bad header)"
    rows = (y if dimension > 1 else 1) * (z if dimension > 2 else 1)
    if storage == 0:
        need = 512 + rows * x * bpc
        return None if size >= need else f"truncated SGI image ({size} of {need} bytes)"
    tables = read(512, 8 * rows)  # every row's start, then every row's length
    if len(tables) < 8 * rows:
        return "truncated SGI image (row tables cut short)"
    starts, lengths = struct.unpack_from(f">{rows}I", tables), struct.unpack_from(
        f">{rows}I", tables, 4 * rows)
    if 0 in starts or 0 in lengths:
        return "truncated SGI image (row tables not filled in)"
    need = max(s + n for s, n in zip(starts, lengths, strict=True))
    return None if size >= need else f"truncated SGI image ({size} of {need} bytes)"


def _iff(size: int, read: Reader) -> str | None:
    """IFF (and Maya's IFF): one ``FORM``/``FOR4``/``FOR8`` chunk, its length up front."""
    head = read(0, 12)
    tag = head[:4]
    if tag in (b"FORM", b"FOR4") and len(head) >= 8:
        need = 8 + struct.unpack_from(">I", head, 4)[0]
    elif tag == b"FOR8" and len(head) >= 12:
        need = 12 + struct.unpack_from(">Q", head, 4)[0]
    else:
        return "not an IFF file (no FORM chunk)"
    if need <= 12:
        return "truncated IFF file (its length not filled in)"
    return None if size >= need else f"truncated IFF file ({size} of {need} bytes)"


_HDR_HEADER_MAX = 1 << 16
#: a Radiance run header byte -> bytes the run takes, and pixels it covers (an empty run,
#: 0, is no run: it skips past any file, so the scanline reads as cut short)
_HDR_SKIP = [1 << 62] + [1 + n for n in range(1, 129)] + [2] * 127
_HDR_PIXELS = [0] + list(range(1, 129)) + list(range(1, 128))


def _hdr(size: int, read: Reader) -> str | None:
    """Radiance: a text header, the resolution line, then every scanline — run-length
    (``2 2`` + its width, then four channels of runs) or flat (four bytes a pixel).
    Nothing says the size up front: the scanlines are walked run by run (the run
    headers only: 0.1-0.5 s for a 4K frame, measured on OpenCV's files from noise to
    4-pixel blocks). A flat file with old-style runs (``1 1 1 n``) is only checked for
    being non-empty."""
    head = read(0, min(size, _HDR_HEADER_MAX))
    if not head.startswith(b"#?"):
        return "not a Radiance HDR file (no #? signature)"
    blank = head.find(b"\n\n")
    line_end = head.find(b"\n", blank + 2) if blank >= 0 else -1
    if line_end < 0:
        return "truncated Radiance HDR (header cut short)"
    res = head[blank + 2:line_end].split()
    if len(res) != 4 or not (res[1].isdigit() and res[3].isdigit()):
        return "not a Radiance HDR file (bad resolution line)"
    lines, width = int(res[1]), int(res[3])
    data = read(line_end + 1, size - line_end - 1)
    end, at = len(data), 0
    marker = bytes((2, 2, width >> 8 & 255, width & 255))
    for _ in range(lines):
        if data[at:at + 4] == marker:
            at += 4
            for _channel in range(4):
                left = width
                while left > 0 and at < end:  # a run: 128+n then a byte, or n then n bytes
                    count = data[at]
                    at += _HDR_SKIP[count]
                    left -= _HDR_PIXELS[count]
                if left > 0:
                    return "truncated Radiance HDR (a scanline cut short)"
        elif at + 4 > end:
            return "truncated Radiance HDR (scanlines missing)"
        else:  # flat scanline
            flat = data[at:at + 4 * width]
            if any(flat[i:i + 3] == b"\x01\x01\x01" for i in range(0, len(flat), 4)):
                return None  # old-style runs: not walked
            at += 4 * width
    return None if at <= len(data) else "truncated Radiance HDR (the last scanline cut short)"


_CHECKS: dict[str, Callable[[int, Reader], str | None]] = {
    "png": _png, "jpg": _jpeg, "jpeg": _jpeg, "exr": _exr, "tif": _tiff, "tiff": _tiff,
    "dpx": _dpx, "tga": _tga, "bmp": _bmp, "psd": _psd, "psb": _psd, "sgi": _sgi,
    "rgb": _sgi, "rgba": _sgi, "bw": _sgi, "iff": _iff, "cin": _cineon, "hdr": _hdr,
}


def bytes_reader(data: bytes) -> Reader:
    """A :data:`Reader` over bytes in memory (tests, and files read whole)."""
    return lambda offset, length: data[offset:offset + length]
