"""stmpo fonts: what is attached — nothing, a folder that did not arrive, files that are not
the fonts they claim, a registry stmpo did not write, a font folder that cannot be
written: each is one line, its exit code, and nothing installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fontlib import font_dir, make_fonts, registry, state_dir, stmpo, stmpo_cli

from stmpo_celery.deadline import _fonts as fonts


# -- nothing attached ------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["", "   ", "empty", "notfonts"])
def test_no_fonts_attached_is_one_line_exit_0_and_changes_nothing(home: Path, tmp_path: Path,
                                                                   source: str) -> None:
    (tmp_path / "empty").mkdir()
    make_fonts(tmp_path / "notfonts", readme__txt=b"hello")
    arg = str(tmp_path / source) if source.strip() else source
    res = (stmpo_cli if source == "" else stmpo)(home, "install", "--from", arg)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert len(res.stdout.splitlines()) == 1
    assert res.stdout.startswith("stmpo fonts: no fonts attached")
    assert list(home.iterdir()) == []  # no font folder, no registry


def test_a_fonts_folder_missing_on_the_worker_fails_the_session(home: Path,
                                                                 tmp_path: Path) -> None:
    """A submitter names a fonts folder only when it holds fonts: missing on the worker,
    the fonts did not arrive, and a render would use substitutes."""
    res = stmpo_cli(home, "install", "--from", str(tmp_path / "fonts"))
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stderr.startswith(f"stmpo: error: the job's fonts folder {tmp_path / 'fonts'} "
                                 "does not exist on this host")
    assert len(res.stderr.splitlines()) == 1 and list(home.iterdir()) == []
    # the session's FontsInstall action: the Deadline monitor says why it failed
    assert res.stdout.splitlines() == [
        "openjd_fail: " + res.stderr.removeprefix("stmpo: error: ").strip()]


def test_a_file_given_as_the_fonts_folder_is_refused(home: Path, tmp_path: Path) -> None:
    (tmp_path / "f.ttf").write_bytes(b"x")
    res = stmpo_cli(home, "install", "--from", str(tmp_path / "f.ttf"))
    assert res.returncode == 2 and "is a file" in res.stderr, res.stdout + res.stderr
    assert len(res.stderr.splitlines()) == 1 and list(home.iterdir()) == []


@pytest.mark.parametrize(("name", "data", "why"), [
    ("Fake.ttf", b"hello, this is text", "is not a TrueType/OpenType font"),
    ("Empty.otf", b"", "is empty"),
    ("Set.ttc", b"\x00\x01\x00\x00 one font", "is not a TrueType/OpenType collection"),
    ("Type1.pfb", b"%!PS-AdobeFont-1.0 (a .pfa renamed)", "is not a PostScript Type 1 font"),
    ("Type1.pfm", b"<html>404</html>", "is not PostScript font metrics"),
    ("Old.fnt", b"<html>404</html>", "is not a Windows raster font"),
    ("Mac.dfont", b"<html><body>404 Not Found</body></html>", "is not a Mac font suitcase"),
])
def test_a_file_that_is_not_the_font_it_claims_is_refused_before_anything_is_installed(
        home: Path, tmp_path: Path, name: str, data: bytes, why: str) -> None:
    src = make_fonts(tmp_path / "f", Good__otf=b"g")
    (src / name).write_bytes(data)
    res = stmpo_cli(home, "install", "--from", str(src), "--session", "s")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith(f"stmpo: error: the font file {src / name} {why}")
    assert "nothing was installed" in res.stderr and len(res.stderr.splitlines()) == 1
    assert list(home.iterdir()) == []  # no font folder, no registry


def test_what_macos_leaves_beside_fonts_is_passed_over(home: Path, tmp_path: Path) -> None:
    """AppleDouble files (``._Name.ttf``) and a ``__MACOSX`` folder from a zip are not fonts:
    neither refused nor installed."""
    src = make_fonts(tmp_path / "f", Brand__ttf=b"b")
    (src / "._Brand.ttf").write_bytes(b"\x00\x05\x16\x07Mac OS X        ")
    (src / "__MACOSX").mkdir()
    (src / "__MACOSX" / "._Brand.ttf").write_bytes(b"\x00\x05\x16\x07Mac OS X        ")
    res = stmpo_cli(home, "install", "--from", str(src), "--session", "s")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in font_dir(home).iterdir()) == ["Brand.ttf"]


def test_real_font_files_pass_the_check() -> None:
    """The check refuses nothing a real font file of each kind starts with."""
    found: dict[str, Path] = {}
    for root in (Path("/usr/share/fonts"), Path("/usr/share/groff"), Path("/usr/share/wine")):
        for p in sorted(root.rglob("*")) if root.is_dir() else []:
            if p.suffix.lower() in fonts.FONT_EXTENSIONS and p.is_file():
                found.setdefault(p.suffix.lower(), p)
    if not found:
        pytest.skip("no font files on this machine")
    assert {ext: fonts.font_problem(p) for ext, p in found.items()} == dict.fromkeys(found)


def test_a_font_folder_that_cannot_be_written_fails_with_exit_3_and_holds_nothing(
        home: Path, tmp_path: Path) -> None:
    blocker = font_dir(home)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the font folder should be")
    src = make_fonts(tmp_path / "f", A__ttf=b"a", B__otf=b"b")
    res = stmpo_cli(home, "install", "--from", str(src), "--session", "s")
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stderr.startswith("stmpo: error: cannot install the font A.ttf into ")
    assert "Traceback" not in res.stderr
    assert registry(home).sessions == {} and registry(home).fonts == {}


@pytest.mark.parametrize("text", [
    '{"fonts": {}, "sessions": {"a": "str"}}',
    '{"fonts": [], "sessions": "x"}',
    '{"fonts": {"k": {"path": 5}}, "sessions": {"s": {"fonts": [1]}}}',
    '{"fonts": 5, "sessions": null}',
    '[1, 2]',
])
def test_a_registry_of_the_wrong_shape_is_one_warning_not_a_traceback(
        home: Path, tmp_path: Path, text: str) -> None:
    state_dir(home).mkdir(parents=True)
    (state_dir(home) / "registry.json").write_text(text)
    src = make_fonts(tmp_path / "f", Brand__ttf=b"b")
    for args in (["list"], ["install", "--from", str(src), "--session", "s"],
                 ["remove", "--session", "s"]):
        res = stmpo_cli(home, *args)
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
    assert registry(home).sessions == {} and registry(home).fonts == {}
