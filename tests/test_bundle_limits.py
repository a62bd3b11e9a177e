"""What Deadline Cloud and its Windows workers would refuse of a job, refused by `stmpo
bundle` before it writes one (in-process)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_footage_off_the_projects_drive_is_said_and_more_than_ten_roots_refused() -> None:
    """A Windows workstation: job attachments keep one copy per drive or share, and a
    worker finds footage only relative to the project, so footage on another drive is
    not found there (warned); CreateJob takes at most 10 roots (refused)."""
    from pathlib import PureWindowsPath

    from stmpo_celery.deadline._bundle import IMAGE, Bundle, check_roots
    from stmpo_celery.errors import BadInput

    b = Bundle(IMAGE, inputs_files=["P:\\shots\\a.aep", "P:\\shots\\plate.mov",
                                    "F:\\stock\\smoke.mov"],
               inputs_dirs=["\\\\nas\\lib\\seq"], outputs_dirs=["R:\\out"])
    check_roots(b, "P:\\shots\\a.aep", ["P:\\shots\\plate.mov", "F:\\stock\\smoke.mov",
                                        "\\\\nas\\lib\\seq"], PureWindowsPath)
    assert len(b.warnings) == 1 and "2 footage file(s) or folder(s)" in b.warnings[0]
    assert "F:\\stock\\smoke.mov" in b.warnings[0]
    many = Bundle(IMAGE, inputs_files=[f"{d}:\\f\\x.mov" for d in "DEFGHIJKLMN"])
    with pytest.raises(BadInput, match="on 11 drives or network shares"):
        check_roots(many, "D:\\f\\x.mov", [], PureWindowsPath)
    same = Bundle(IMAGE, inputs_files=["/p/a.aep", "/p/f.mov"], outputs_dirs=["/r"])
    check_roots(same, "/p/a.aep", ["/p/f.mov"])  # one root: nothing to say
    assert same.warnings == []


@pytest.mark.parametrize("name", ["CON.ttf", "Brand:Bold.otf"])
def test_a_font_a_windows_worker_cannot_install_under_its_name_is_refused(
        tmp_path: Path, name: str) -> None:
    """A job font is installed under its own file name, and After Effects' workers run
    Windows: ``CON.ttf`` (a device) or a name with ``:`` made every session fail in its
    Fonts environment, after the upload."""
    from click.testing import CliRunner
    from fontlib import font

    from stmpo_celery.cli._bundle import bundle_command

    fonts = tmp_path / "fonts"
    fonts.mkdir()
    (fonts / name).write_bytes(font(name, b"glyphs"))
    (tmp_path / "a.aep").write_text("aep")
    res = CliRunner().invoke(bundle_command, [
        "--project", str(tmp_path / "a.aep"), "--comp", "C", "--frames", "1-10", "--output",
        str(tmp_path / "o_[##].png"), "--dest", str(tmp_path / "b"), "--fonts-dir", str(fonts)])
    assert res.exit_code != 0 and f"--fonts-dir font {name!r}" in str(res.exception)
    assert "rename it" in str(res.exception) and not (tmp_path / "b").exists()
