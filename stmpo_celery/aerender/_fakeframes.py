"""Small but structurally real frame files for the simulator, written like AE writes them.

:func:`frame_writes` returns the writes that produce one frame, in the order a real
image library issues them: a PNG or JPEG front to back, an OpenEXR with its offset table
zero-filled first and filled in last, a TIFF with its IFD after the pixels and the
header patched at the end, a DPX header (which declares less than the file holds, as
ImageMagick's does) then the pixels,
a run-length Photoshop file with its row-length table zero-filled first and filled in
last, an SGI or Cineon header then the pixels, an IFF whose ``FOR4`` length is patched
in at the end, a Radiance HDR's header then its run-length scanlines. The simulator
performs them in place, optionally slowly, so a kill mid-write leaves exactly the
partial file the real program would leave. Unknown extensions get a text file.
"""

from __future__ import annotations

import struct
import time
import zlib

from ..plan import EXR_MAGIC, PNG_IEND, PNG_SIGNATURE, extension

#: (offset, bytes) in write order
Writes = list[tuple[int, bytes]]

_PIXELS = 2048  #: payload bytes per frame: a handful of writes when written slowly


def _split(offset: int, data: bytes, pieces: int = 4) -> Writes:
    step = max(1, -(-len(data) // pieces))
    return [(offset + i, data[i:i + step]) for i in range(0, len(data), step)]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(frame: int, text: bytes) -> Writes:
    width, height = 16, 32
    raw = b"".join(b"\x00" + bytes((frame + y) % 256 for _ in range(width * 4))
                   for y in range(height))
    head = PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6,
                                                           0, 0, 0))
    body = _png_chunk(b"tEXt", b"Comment\x00" + text) + _png_chunk(
        b"IDAT", zlib.compress(raw, 0)) + _png_chunk(b"zTXt", b"pad\x00\x00" + bytes(_PIXELS))
    out = [(0, head)] + _split(len(head), body)
    out.append((len(head) + len(body), PNG_IEND))
    return out


def _jpeg(frame: int, text: bytes) -> Writes:
    comment = b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text
    body = comment + bytes((frame + i) % 256 for i in range(_PIXELS))
    return [(0, b"\xff\xd8")] + _split(2, body) + [(2 + len(body), b"\xff\xd9")]


def _exr_attr(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\x00" + kind.encode() + b"\x00" + struct.pack("<i", len(value)) + value


def _exr(frame: int, text: bytes) -> Writes:
    width, height = 16, 16
    channels = b"Y\x00" + struct.pack("<iB3xii", 1, 0, 1, 1) + b"\x00"  # HALF, one channel
    header = EXR_MAGIC + struct.pack("<I", 2) + b"".join([
        _exr_attr("channels", "chlist", channels),
        _exr_attr("compression", "compression", b"\x00"),  # NO: one scanline per chunk
        _exr_attr("dataWindow", "box2i", struct.pack("<4i", 0, 0, width - 1, height - 1)),
        _exr_attr("displayWindow", "box2i", struct.pack("<4i", 0, 0, width - 1, height - 1)),
        _exr_attr("lineOrder", "lineOrder", b"\x00"),
        _exr_attr("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
        _exr_attr("screenWindowCenter", "v2f", struct.pack("<2f", 0.0, 0.0)),
        _exr_attr("screenWindowWidth", "float", struct.pack("<f", 1.0)),
        _exr_attr("comments", "string", text),
    ]) + b"\x00"
    table_at = len(header)
    pos = table_at + 8 * height
    chunks: Writes = []
    offsets = []
    for y in range(height):
        data = bytes((frame + y) % 256 for _ in range(2 * width))
        offsets.append(pos)
        chunks.append((pos, struct.pack("<iI", y, len(data)) + data))
        pos += 8 + len(data)
    # OpenEXR reserves the offset table (zeros), writes the chunks, then fills the table
    return ([(0, header + bytes(8 * height))] + chunks
            + [(table_at, struct.pack(f"<{height}Q", *offsets))])


def _tiff(frame: int, text: bytes) -> Writes:
    pixels = bytes((frame + i) % 256 for i in range(_PIXELS)) + text
    ifd_at = 8 + len(pixels) + (len(pixels) % 2)
    entries = [(256, 4, 1, 64), (257, 4, 1, len(pixels) // 64), (258, 3, 1, 8),
               (273, 4, 1, 8), (279, 4, 1, len(pixels))]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", value, 0) if typ == 3
                                                 else struct.pack("<I", value))
        for tag, typ, count, value in entries) + struct.pack("<I", 0)
    # libtiff: header with no IFD yet, the strips, the IFD, then the header's IFD pointer
    return ([(0, b"II*\x00" + bytes(4))] + _split(8, pixels) + [(ifd_at, ifd)]
            + [(4, struct.pack("<I", ifd_at))])


def _dpx(frame: int, text: bytes) -> Writes:
    """10-bit RGB filled into 32-bit words (method A), 16 x 32 pixels, whose header
    declares one byte a sample as ImageMagick's writer does: a quarter less than the
    file holds."""
    width, lines = 16, _PIXELS // (16 * 4)
    pixels = bytes((frame + i) % 256 for i in range(width * lines * 4))
    header = bytearray(2048)
    struct.pack_into(">4sI8sI", header, 0, b"SDPX", 2048, b"V2.0\x00\x00\x00\x00",
                     2048 + width * lines * 3)
    struct.pack_into(">HHII", header, 768, 0, 1, width, lines)
    header[800], header[803] = 50, 10  # RGB, 10 bits
    struct.pack_into(">HHI", header, 804, 1, 0, 2048)  # filled (A), not encoded, its offset
    header[100:100 + min(len(text), 100)] = text[:100]
    return [(0, bytes(header))] + _split(2048, pixels)


def _tga(frame: int, text: bytes) -> Writes:
    """Uncompressed 32-bit Targa: 16 x 32 pixels, the comment as the image ID."""
    width, height = 16, _PIXELS // (16 * 4)
    ident = text[:255]
    header = struct.pack("<BBBHHBHHHHBB", len(ident), 0, 2, 0, 0, 0, 0, 0, width, height,
                         32, 8)
    pixels = bytes((frame + i) % 256 for i in range(width * height * 4))
    return [(0, header + ident)] + _split(18 + len(ident), pixels)


def _bmp(frame: int, text: bytes) -> Writes:
    """32-bit BMP: 16 x 32 pixels; the header's file size is written first, as writers do."""
    width, height = 16, _PIXELS // (16 * 4)
    pixels = bytes((frame + i) % 256 for i in range(width * height * 4))
    offset = 14 + 40
    header = (struct.pack("<2sIHHI", b"BM", offset + len(pixels), 0, 0, offset)
              + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 32, 0, len(pixels),
                            2835, 2835, 0, 0))
    return [(0, header)] + _split(offset, pixels)


def _psd(frame: int, text: bytes, version: int = 1) -> Writes:
    """RGB, 8 bits, run-length rows (each one literal packet), no layers; the text as an
    image resource (a caption). ``version`` 2 is a PSB (8-byte layer section length,
    4-byte row lengths)."""
    width, height, channels = 16, 8, 3
    resource = b"8BIM" + struct.pack(">H", 1000) + b"\x00\x00" + struct.pack(
        ">I", len(text) + len(text) % 2) + text + bytes(len(text) % 2)
    head = (b"8BPS" + struct.pack(">H6xHIIHH", version, channels, height, width, 8, 3)
            + struct.pack(">I", 0) + struct.pack(">I", len(resource)) + resource
            + bytes(4 * version) + struct.pack(">H", 1))
    rows = [bytes([width - 1]) + bytes((frame + c * 7 + y + x) % 256 for x in range(width))
            for c in range(channels) for y in range(height)]
    table = struct.pack(f">{len(rows)}{'H' if version == 1 else 'I'}", *(len(r) for r in rows))
    data = b"".join(rows)
    return ([(0, head + bytes(len(table)))] + _split(len(head) + len(table), data)
            + [(len(head), table)])


def _sgi(frame: int, text: bytes, channels: int = 3) -> Writes:
    """Uncompressed SGI (``channels``: 1 for .bw, 3 for .sgi/.rgb, 4 for .rgba): 16 x 16
    pixels, one plane per channel; the text as its name."""
    width, height = 16, 16
    header = bytearray(512)
    struct.pack_into(">hBBHHHHii", header, 0, 474, 0, 1, 3, width, height, channels, 0, 255)
    header[24:24 + min(len(text), 79)] = text[:79]
    pixels = bytes((frame + i) % 256 for i in range(width * height * channels))
    return [(0, bytes(header))] + _split(512, pixels)


def _iff(frame: int, text: bytes) -> Writes:
    """Maya IFF: a ``FOR4 CIMG`` form written with its length zero and patched at the end."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return tag + struct.pack(">I", len(data)) + data + bytes(-len(data) % 4)

    width, height = 16, 16
    body = (b"CIMG" + chunk(b"TBHD", struct.pack(">IIHHIHHI", width, height, 1, 1, 3, 0, 1, 0))
            + chunk(b"ANNO", text)
            + chunk(b"RGBA", bytes((frame + i) % 256 for i in range(width * height * 4))))
    return ([(0, b"FOR4" + bytes(4))] + _split(8, body)
            + [(4, struct.pack(">I", len(body)))])


def _cineon(frame: int, text: bytes) -> Writes:
    """One 8-bit channel, 64 x 32 pixels after a 1024-byte header (the text in its
    user-data field)."""
    pixels = bytes((frame + i) % 256 for i in range(_PIXELS))
    header = bytearray(1024)
    struct.pack_into(">IIIIII", header, 0, 0x802A5FD7, 1024, 1024, 0, 0, 1024 + len(pixels))
    struct.pack_into(">BB2xBBBxII", header, 192, 0, 1, 0, 0, 8, 64, len(pixels) // 64)
    header[900:900 + min(len(text), 100)] = text[:100]
    return [(0, bytes(header))] + _split(1024, pixels)


def _rle_channel(values: bytes) -> bytes:
    """One channel of a Radiance scanline as ``fwritecolrs`` writes it: a run of four or
    more equal bytes as ``128 + n, byte``, the rest as literal runs ``n, bytes...``."""
    out, i = bytearray(), 0
    while i < len(values):
        run = 1
        while i + run < len(values) and run < 127 and values[i + run] == values[i]:
            run += 1
        if run >= 4:
            out += bytes((128 + run, values[i]))
            i += run
            continue
        j = i
        while j < len(values) and j - i < 128 and not (
                j + 3 < len(values) and values[j] == values[j + 1] == values[j + 2]
                == values[j + 3]):
            j += 1
        j = max(j, i + 1)
        out += bytes((j - i,)) + values[i:j]
        i = j
    return bytes(out)


def _hdr(frame: int, text: bytes) -> Writes:
    """Radiance RGBE, run-length scanlines: a flat left half (runs) and a varied right
    half (literal runs); one scanline per write after the header."""
    width, height = 32, 8
    head = (b"#?RADIANCE\n# " + text.strip() + b"\nFORMAT=32-bit_rle_rgbe\n\n"
            + f"-Y {height} +X {width}\n".encode())
    writes: Writes = [(0, head)]
    at = len(head)
    for y in range(height):
        line = bytearray((2, 2, width >> 8, width & 255))
        for c in range(4):
            line += _rle_channel(bytes(((frame + c) % 256 if x < width // 2
                                        else (frame + 3 * x + y + c) % 256)
                                       for x in range(width)))
        writes.append((at, bytes(line)))
        at += len(line)
    return writes


def frame_writes(path: str, frame: int) -> Writes:
    """The writes that produce frame ``frame`` at ``path``, in a real writer's order."""
    text = f"stmpo fake frame {frame}\n".encode()
    maker = {"png": _png, "jpg": _jpeg, "jpeg": _jpeg, "exr": _exr, "tif": _tiff,
             "tiff": _tiff, "dpx": _dpx, "tga": _tga, "bmp": _bmp, "psd": _psd,
             "psb": lambda f, t: _psd(f, t, version=2), "sgi": _sgi, "rgb": _sgi,
             "rgba": lambda f, t: _sgi(f, t, channels=4),
             "bw": lambda f, t: _sgi(f, t, channels=1), "iff": _iff, "cin": _cineon,
             "hdr": _hdr}.get(extension(path))
    if maker is None:
        return [(0, text)] + _split(len(text), bytes(_PIXELS))
    return maker(frame, text)


def frame_bytes(path: str, frame: int) -> bytes:
    """The finished file (all writes applied)."""
    buf = bytearray()
    for offset, data in frame_writes(path, frame):
        if len(buf) < offset + len(data):
            buf.extend(bytes(offset + len(data) - len(buf)))
        buf[offset:offset + len(data)] = data
    return bytes(buf)


def write_in_place(path: str, writes: Writes, seconds: float = 0.0) -> None:
    """Perform ``writes`` on ``path`` (truncated first), spread over ``seconds``."""
    pause = seconds / max(1, len(writes))
    with open(path, "wb") as fh:
        for offset, data in writes:
            fh.seek(offset)
            fh.write(data)
            fh.flush()
            deadline = time.monotonic() + pause
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, 0.05))
