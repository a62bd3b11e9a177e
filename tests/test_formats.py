"""Whole-frame checks (pure), output overlap, and the in-flight ledger's bookkeeping."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from stmpo_celery.aerender._fakeframes import frame_bytes, frame_writes
from stmpo_celery.plan._formats import _CHECKS, bytes_reader, frame_problem
from stmpo_celery.plan._pattern import OutputPattern, shared_frames
from stmpo_celery.slot._ledger import Ledger, entries, settle, state_dir

#: every extension the checks know: each must have a simulator writer whose frames pass
FORMATS = sorted(_CHECKS)


def problem(name: str, data: bytes) -> str | None:
    return frame_problem(name, len(data), bytes_reader(data))


def partial_writes(name: str, frame: int) -> list[bytes]:
    """The file as it is on disk after each write but the last (a kill at that moment)."""
    out = []
    writes = frame_writes(name, frame)
    buf = bytearray()
    for offset, data in writes[:-1]:
        if len(buf) < offset + len(data):
            buf.extend(bytes(offset + len(data) - len(buf)))
        buf[offset:offset + len(data)] = data
        out.append(bytes(buf))
    return out


@pytest.mark.parametrize("ext", FORMATS)
def test_whole_frame_passes_and_every_partial_state_fails(ext: str) -> None:
    name = f"/r/shot_0007.{ext}"
    assert problem(name, frame_bytes(name, 7)) is None
    partials = partial_writes(name, 7)
    assert partials, "the writer must take more than one write"
    for data in partials:
        assert problem(name, data) is not None, (ext, len(data))


@pytest.mark.parametrize("ext", FORMATS)
def test_truncated_and_foreign_files_fail(ext: str) -> None:
    name = f"/r/shot_0001.{ext}"
    whole = frame_bytes(name, 1)
    for cut in (len(whole) - 1, len(whole) // 2, 3):
        assert problem(name, whole[:cut]) is not None, (ext, cut)
    assert problem(name, b"done") is not None
    assert problem(name, b"") == "empty file"


def test_exr_with_zero_filled_offset_table_is_partial() -> None:
    name = "/r/a.exr"
    whole = bytearray(frame_bytes(name, 3))
    # every chunk on disk but the table not yet written back: exactly what a kill leaves
    writes = frame_writes(name, 3)
    table_offset, table = writes[-1]
    whole[table_offset:table_offset + len(table)] = bytes(len(table))
    assert "offset table" in (problem(name, bytes(whole)) or "")


def test_tiled_exr_and_unknown_formats_are_only_checked_for_size() -> None:
    tiled = b"\x76\x2f\x31\x01" + struct.pack("<I", 2 | 0x200) + b"\x00" * 8
    assert problem("/r/t.exr", tiled) is None
    assert problem("/r/t.pic", b"x") is None and problem("/r/t.pic", b"") == "empty file"
    assert problem("/r/noext", b"x") is None


def test_shared_frames_compares_paths_not_numbers() -> None:
    a = OutputPattern("/r/shot_[####].png")
    assert shared_frames(a, [1, 2, 3], OutputPattern("/r/shot_[####].png"), [3, 4]) == [3]
    assert shared_frames(a, [1, 2, 3], OutputPattern("/r/shot_[####].exr"), [1, 2, 3]) == []
    assert shared_frames(a, [1, 2], OutputPattern("/r/other_[####].png"), [1, 2]) == []
    # another width names other files, except where the number is wider than both
    assert shared_frames(OutputPattern("/r/s_[##].png"), [5, 123],
                         OutputPattern("/r/s_[###].png"), [5, 123]) == [123]
    movie = OutputPattern("/r/shot.mov")
    assert shared_frames(movie, [1], OutputPattern("/r/shot.mov"), [7]) == [1]


def test_ledger_lists_in_flight_frames_until_done_and_settle_deletes_them(tmp_path: Path) -> None:
    pattern = OutputPattern(str(tmp_path / "shot_[####].png"))
    for f in (1, 2, 3, 4):
        Path(pattern.path_for(f)).write_bytes(b"partial")
    led = Ledger(pattern, "run1", 0, [1, 2, 3, 4])
    led.open()
    led.done(1)
    (entry,) = entries(state_dir(pattern))
    assert entry.run_id == "run1" and entry.frames == [2, 3, 4]
    other = Ledger(pattern, "run2", 1, [9])
    other.open()
    deleted = settle(state_dir(pattern), lambda e: e.run_id == "run1")
    assert sorted(deleted) == [pattern.path_for(f) for f in (2, 3, 4)]
    assert Path(pattern.path_for(1)).exists() and not Path(pattern.path_for(4)).exists()
    assert [e.run_id for e in entries(state_dir(pattern))] == ["run2"]
    other.close()
    led.close()
    assert entries(state_dir(pattern)) == []


def test_padding_after_the_end_marker_is_tolerated() -> None:
    for name in ("/r/a.png", "/r/a.jpg"):
        assert problem(name, frame_bytes(name, 1) + bytes(16)) is None
    assert problem("/r/a.png", frame_bytes("/r/a.png", 1) + b"trailer") is None


def _whole_and_every_cut_rejected(path: Path) -> None:
    data = path.read_bytes()
    assert problem(str(path), data) is None, path.name
    for cut in (len(data) - 1, len(data) * 3 // 4, len(data) // 2, 100):
        assert problem(str(path), data[:cut]) is not None, (path.name, cut)


def test_files_from_real_image_libraries(tmp_path: Path) -> None:
    """libpng, libjpeg, libtiff (through Pillow) and OpenEXR (the test extras install
    them)."""
    image = pytest.importorskip("PIL.Image")
    numpy = pytest.importorskip("numpy")
    rng = numpy.random.default_rng(1)
    im = image.fromarray((rng.random((96, 128, 3)) * 255).astype("uint8"))
    for name, kw in (("a.png", {}), ("a.jpg", {"quality": 90}),
                     ("p.jpg", {"progressive": True}), ("a.tif", {}),
                     ("z.tif", {"compression": "tiff_adobe_deflate"})):
        im.save(tmp_path / name, **kw)
        _whole_and_every_cut_rejected(tmp_path / name)
    exr = pytest.importorskip("OpenEXR")
    for comp in (exr.NO_COMPRESSION, exr.ZIP_COMPRESSION, exr.PIZ_COMPRESSION):
        path = tmp_path / f"a{int(comp)}.exr"
        exr.File({"compression": comp, "type": exr.scanlineimage},
                 {"RGB": rng.random((60, 80, 3)).astype("float32")}).write(str(path))
        _whole_and_every_cut_rejected(path)


def test_the_simulators_photoshop_and_sgi_frames_are_real_ones() -> None:
    """Pillow's own readers decode the frames the simulator writes (so the checks are
    tried on real files), and a Photoshop file whose row-length table is still zeros (a
    writer that fills it in last, killed before) is partial."""
    import io

    image = pytest.importorskip("PIL.Image")
    for ext, size in (("psd", (16, 8)), ("sgi", (16, 16))):
        im = image.open(io.BytesIO(frame_bytes(f"/r/a.{ext}", 5)))
        im.load()
        assert (im.format, im.size, im.mode) == (ext.upper(), size, "RGB")
    whole = bytearray(frame_bytes("/r/a.psd", 5))
    table_at, table = frame_writes("/r/a.psd", 5)[-1]
    whole[table_at:table_at + len(table)] = bytes(len(table))
    assert "not filled in" in (problem("/r/a.psd", bytes(whole)) or "")


@pytest.mark.parametrize("name", ["opencv-rle.hdr", "opencv-flat.hdr"])
def test_radiance_files_written_by_opencv(name: str) -> None:
    """Radiance HDRs written by OpenCV's encoder (tests/data: run-length scanlines, and
    flat ones, which it writes for images under 8 pixels wide)."""
    _whole_and_every_cut_rejected(Path(__file__).parent / "data" / name)


def test_run_length_sgi_and_raw_photoshop_follow_their_tables() -> None:
    """A run-length SGI (rows found through its start and length tables, as Pillow reads
    them) and an uncompressed Photoshop file (its size follows from the header)."""
    import io

    width, height = 4, 2
    rows = [bytes([0x80 | width]) + bytes([10 * c + y] * width) + b"\x00"
            for c in range(3) for y in range(height)]
    starts, at = [], 512 + 8 * len(rows)
    for r in rows:
        starts.append(at)
        at += len(r)
    header = bytearray(512)
    struct.pack_into(">hBBHHHH", header, 0, 474, 1, 1, 3, width, height, 3)
    sgi = (bytes(header) + struct.pack(f">{len(rows)}I", *starts)
           + struct.pack(f">{len(rows)}I", *(len(r) for r in rows)) + b"".join(rows))
    image = pytest.importorskip("PIL.Image")
    assert image.open(io.BytesIO(sgi)).convert("RGB").getpixel((0, 0)) == (1, 11, 21)
    assert problem("/r/a.rgb", sgi) is None
    assert "truncated SGI" in (problem("/r/a.rgb", sgi[:-1]) or "")
    unfilled = sgi[:512] + bytes(8 * len(rows)) + sgi[512 + 8 * len(rows):]
    assert "not filled in" in (problem("/r/a.rgb", unfilled) or "")
    psd = (b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
           + bytes(12) + struct.pack(">H", 0) + bytes(range(3 * width * height)))
    assert image.open(io.BytesIO(psd)).convert("RGB").getpixel((1, 0)) == (1, 9, 17)
    assert problem("/r/a.psd", psd) is None
    assert "truncated Photoshop" in (problem("/r/a.psd", psd[:-1]) or "")


def test_run_length_targa_is_whole_only_with_every_packet() -> None:
    """An RLE Targa (type 10) has no size in its header: every packet must be there."""
    import struct

    from stmpo_celery.plan._formats import bytes_reader, frame_problem

    width, height = 4, 2
    header = struct.pack("<BBBHHBHHHHBB", 0, 0, 10, 0, 0, 0, 0, 0, width, height, 24, 0)
    packets = bytes([0x83]) + b"\x01\x02\x03" + bytes([0x03]) + b"\x04\x05\x06" * 4
    whole = header + packets
    assert frame_problem("f.tga", len(whole), bytes_reader(whole)) is None
    cut = whole[:-3]
    assert "truncated" in (frame_problem("f.tga", len(cut), bytes_reader(cut)) or "")


def test_a_frame_counts_once_it_is_whole_and_not_the_file_there_before(tmp_path: Path) -> None:
    """What progress counts: a whole frame this render wrote. Told apart from the file an
    earlier render left by its signature, not by clocks: a file server's clock may be
    minutes behind this host's (the frame's mtime then reads as 'before the run')."""
    import os

    from stmpo_celery.aerender._output import signatures, written_whole

    pattern = OutputPattern(str(tmp_path / "f_[####].png"))
    old = tmp_path / "f_0001.png"
    old.write_bytes(frame_bytes("f.png", 1))  # a whole frame from an earlier render
    before = signatures(pattern, [1, 2])
    assert list(before) == [1]
    assert not written_whole(str(old), before[1])  # not rewritten yet
    new = tmp_path / "f_0002.png"
    new.write_bytes(frame_bytes("f.png", 2)[:40])  # being written
    assert not written_whole(str(new), before.get(2))
    new.write_bytes(frame_bytes("f.png", 2))
    os.utime(new, (1000, 1000))  # a server clock far behind
    assert written_whole(str(new), before.get(2))
    tmp = tmp_path / "tmp.png"  # rewritten the way some writers do: a new file renamed
    tmp.write_bytes(frame_bytes("f.png", 1))
    os.utime(tmp, (1000, 1000))
    os.replace(tmp, old)
    assert written_whole(str(old), before[1])


@pytest.mark.parametrize("name", ["imagemagick-rgb10.dpx", "imagemagick-rgba10.dpx",
                                  "imagemagick-grey10.dpx"])
def test_a_dpx_that_declares_less_than_it_holds_is_checked_by_its_pixels(name: str) -> None:
    """ImageMagick's 10-bit DPX declares one byte a sample: its last quarter was taken
    on the header's word. The first element's pixels, line by line as depth and packing
    lay them out (10-bit lines start on a 32-bit word: 61 grey pixels take 21 words), must
    be there: every cut fails."""
    whole = (Path(__file__).parent / "data" / name).read_bytes()
    declared = struct.unpack_from(">I", whole, 16)[0]
    assert declared < len(whole) - 500  # the premise: the field under-declares
    assert problem(name, whole) is None
    for cut in range(declared, len(whole)):
        assert problem(name, whole[:cut]) is not None, cut
