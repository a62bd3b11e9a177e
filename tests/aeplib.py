"""Real After Effects projects for tests, built with py-aep (no hand-made binaries)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import py_aep
from py_aep import ImportOptions
from py_aep.enums import OutputFormat


def write_png(path: Path, w: int = 4, h: int = 4) -> None:
    """A real (tiny) PNG: py-aep probes imported media, so footage must be real images."""
    raw = b"".join(b"\x00" + b"\x80\x40\x20" * w for _ in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def set_format(om: object, fmt: OutputFormat) -> None:
    """Set an output module's format. py-aep changes formats only by applying a template
    from After Effects' preferences (none on a test machine), so the format id of the
    module's Rouu chunk is set directly: py-aep (and stmpo) then read that format."""
    om._roou.format_id = fmt.to_format_id()  # type: ignore[attr-defined]


def build_project(tmp: Path) -> Path:
    """``shot.aep``: comps ``Main Comp`` (24 fps, 10 s, a text layer) and ``Edit`` (25 fps,
    5 s); render queue 1 = Main Comp, PNG sequence, queued; 2 = Edit, QuickTime movie,
    queued; 3 = Edit, unqueued; 4 = Main Comp with two output modules, queued; 5 = Main
    Comp, PNG sequence not numbered by comp frame. Footage: an imported 5-frame PNG
    sequence, a still, and a still deleted after saving (missing)."""
    for i in range(1, 6):
        write_png(tmp / "plates" / f"plate_{i:04d}.png")
    write_png(tmp / "logo.png")
    write_png(tmp / "gone.png")
    app = py_aep.new()
    proj = app.project
    main = proj.root_folder.add_comp("Main Comp", 320, 240, 1.0, 10.0, 24.0)
    edit = proj.root_folder.add_comp("Edit", 320, 240, 1.0, 5.0, 25.0)
    seq = ImportOptions(tmp / "plates" / "plate_0001.png")
    seq.sequence = True
    proj.import_file(seq)
    proj.import_file(ImportOptions(tmp / "logo.png"))
    proj.import_file(ImportOptions(tmp / "gone.png"))
    main.add_text("Title")
    out = tmp / "renders"

    def item(comp: object, fmt: OutputFormat, name: str, **settings: object) -> object:
        assert proj.render_queue is not None
        rqi = proj.render_queue.add(comp)  # type: ignore[arg-type]
        om = rqi.output_modules[0]
        if settings:  # before the format: py-aep validates settings against the format
            om.settings = {k.replace("_", " "): v for k, v in settings.items()}
        set_format(om, fmt)
        om.file = str(out / name)
        return rqi

    item(main, OutputFormat.PNG_SEQUENCE, "main_[#####].png")
    item(edit, OutputFormat.QUICKTIME, "edit.mov")
    unqueued = item(edit, OutputFormat.PNG_SEQUENCE, "edit_[#####].png")
    unqueued.render = False  # type: ignore[attr-defined]
    two = item(main, OutputFormat.PNG_SEQUENCE, "two_[#####].png")
    two.add()  # type: ignore[attr-defined]
    item(main, OutputFormat.PNG_SEQUENCE, "n_[#####].png", Use_Comp_Frame_Number=False)
    path = tmp / "shot.aep"
    proj.save(path)
    (tmp / "gone.png").unlink()
    return path
