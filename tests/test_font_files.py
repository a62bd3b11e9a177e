"""stmpo fonts: what is attached — nothing, a folder that did not arrive, files that are not
the fonts they claim, a registry stmpo did not write, a font folder that cannot be
written: each is one line, its exit code, and nothing installed.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from fontlib import (
    collection,
    font,
    font_dir,
    make_fonts,
    registry,
    sfnt,
    state_dir,
    stmpo,
    stmpo_cli,
)

from stmpo_celery.cli._bundle import bundle_command
from stmpo_celery.deadline import _fontfiles as fontfiles
from stmpo_celery.deadline import _fonts as fonts
from stmpo_celery.errors import BadInput


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
    ("Tiny.ttf", b"\x00\x01\x00\x00", "is not a TrueType/OpenType font (it is cut short: 4 "
                                     "bytes, and its header needs 12)"),
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
            if p.suffix.lower() in fontfiles.FONT_EXTENSIONS and p.is_file():
                found.setdefault(p.suffix.lower(), p)
    if not found:
        pytest.skip("no font files on this machine")
    assert {ext: fontfiles.font_problem(p) for ext, p in found.items()} == dict.fromkeys(found)


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


# -- cut short, and what a file that is not a font is ---------------------------------------
_HEADER = struct.Struct(">4sHHHH")


@pytest.mark.parametrize(("name", "data", "why"), [
    ("Tiny.ttf", b"\x00\x01\x00\x00", "it is cut short: 4 bytes, and its header needs 12"),
    ("None.otf", _HEADER.pack(b"OTTO", 0, 0, 0, 0) + bytes(40),
     "its table directory lists no tables"),
    ("Dir.ttf", _HEADER.pack(b"true", 2, 0, 0, 0) + bytes(16),
     "it is cut short: 28 bytes, and its table directory needs 44"),
    ("Tables.ttf", sfnt(b"x" * 100)[:-10], "it is cut short: 118 bytes, and its tables need 128"),
    ("None.ttc", b"ttcf" + struct.pack(">II", 0x10000, 0), "its header lists no fonts"),
    ("List.ttc", b"ttcf" + struct.pack(">III", 0x10000, 3, 20),
     "it is cut short: 16 bytes, and its list of fonts needs 24"),
    ("Where.ttc", b"ttcf" + struct.pack(">III", 0x10000, 1, 100) + bytes(100),
     "its font 1 of 1 is not at byte 100, where its header says"),
    ("Cut.ttc", collection(b"a" * 50, b"b" * 50)[:-5],
     "its font 2 of 2: it is cut short: 171 bytes, and its tables need 176"),
])
def test_a_font_cut_short_is_refused(tmp_path: Path, name: str, data: bytes, why: str) -> None:
    """A TrueType/OpenType font (or collection) must be as long as its header and table
    directory say: a download that stopped midway is not the font."""
    (tmp_path / name).write_bytes(data)
    kind = "collection" if name.endswith(".ttc") else "font"
    assert fontfiles.font_problem(tmp_path / name) == \
        f"is not a TrueType/OpenType {kind} ({why})"


def test_whole_fonts_and_collections_pass(tmp_path: Path) -> None:
    for name, data in [("One.ttf", sfnt(b"x")), ("Two.otf", sfnt(b"y" * 9, b"OTTO")),
                       ("Three.ttc", collection(b"a", b"bb", b"ccc"))]:
        (tmp_path / name).write_bytes(data)
        assert fontfiles.font_problem(tmp_path / name) is None, name


@pytest.mark.parametrize(("data", "what"), [
    (b"root:secret:19000:0:99999:7:::\n", "it is text"),
    (b"  <!DOCTYPE html><title>secret</title>",
     "it looks like HTML or XML, such as a web page saved under the font's name"),
    (b"PK\x03\x04secret.ttf", "it is a ZIP archive: attach the font files inside it"),
    (b"wOF2secret", "it is a web font (WOFF), which After Effects cannot use"),
    (b"\x07\x00secret\xff", "its first bytes fit no font format"),
])
def test_a_refusal_describes_the_file_and_never_quotes_it(home: Path, tmp_path: Path,
                                                          data: bytes, what: str) -> None:
    """The file may be a link to anything (a private file): its bytes are not printed."""
    private = tmp_path / "private"
    private.write_bytes(data)
    src = tmp_path / "f"
    src.mkdir()
    (src / "Fake.ttf").symlink_to(private)
    with pytest.raises(BadInput) as err:
        fontfiles.refuse_broken_fonts(fontfiles.find_fonts(src), "fix it")
    assert err.value.message == (f"the font file {src / 'Fake.ttf'} is not a TrueType/OpenType "
                                 f"font ({what}): fix it")
    assert "secret" not in err.value.message


# -- two fonts of one name -------------------------------------------------------------------
def test_two_different_fonts_of_one_name_are_refused_by_install(home: Path,
                                                                tmp_path: Path) -> None:
    """Fonts are installed side by side in one folder: only one of them could be used."""
    src = make_fonts(tmp_path / "sub" / "Regular", Fam__ttf=b"R").parent
    make_fonts(src / "Bold", fam__TTF=b"B")
    res = stmpo_cli(home, "install", "--from", str(src), "--session", "s")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr == (f"stmpo: error: the font files {src / 'Bold' / 'fam.TTF'} and "
                          f"{src / 'Regular' / 'Fam.ttf'} have one name but different content: "
                          "rename one of them (a job's fonts are installed side by side in one "
                          "folder, so only one could be used)\n")
    assert list(home.iterdir()) == []
    with pytest.raises(BadInput, match="have one name but different content"):
        fonts.install_fonts(src, fonts.places(), fonts.Session("s", None, None, None, "t"))


def test_two_different_fonts_of_one_name_are_refused_by_bundle(tmp_path: Path) -> None:
    (tmp_path / "a.aep").write_text("aep")
    src = make_fonts(tmp_path / "sub" / "Regular", Fam__otf=b"R").parent
    make_fonts(src / "Bold", Fam__otf=b"B")
    res = CliRunner().invoke(bundle_command, [
        "--project", str(tmp_path / "a.aep"), "--comp", "C", "--frames", "1-10",
        "--output", str(tmp_path / "o_[##].png"), "--dest", str(tmp_path / "b"),
        "--fonts-dir", str(src)])
    assert isinstance(res.exception, BadInput), res.output
    assert str(res.exception).startswith(f"the font files {src / 'Bold' / 'Fam.otf'} and "
                                         f"{src / 'Regular' / 'Fam.otf'} have one name but "
                                         "different content: rename one of them")
    assert not (tmp_path / "b").exists()


def test_the_same_font_twice_is_installed_once(home: Path, tmp_path: Path) -> None:
    src = make_fonts(tmp_path / "f" / "a", Fam__ttf=b"same").parent
    make_fonts(src / "b", FAM__ttf=b"same")
    fontfiles.refuse_broken_fonts(fontfiles.find_fonts(src), "fix")
    res = stmpo(home, "install", "--from", str(src), "--session", "s")
    assert res.returncode == 0 and res.stderr == "" and "installed 1 (Fam.ttf)" in res.stdout
    assert [p.name for p in font_dir(home).iterdir()] == ["Fam.ttf"]


# -- files that are not installed ------------------------------------------------------------
def test_web_fonts_and_odd_names_beside_fonts_are_named_once(home: Path, tmp_path: Path) -> None:
    """After Effects cannot use web fonts; ``Brand.ttf `` is no .ttf. Neither is installed,
    and the install says so in one warning (a readme is not mentioned)."""
    src = make_fonts(tmp_path / "f", Brand__ttf=b"b", readme__txt=b"r", Brand__woff=b"w")
    make_fonts(src / "web", Brand__woff2=b"w2")
    (src / "Odd.ttf ").write_bytes(font(".ttf", b"o"))
    res = stmpo(home, "install", "--from", str(src), "--session", "s")
    assert res.returncode == 0
    assert res.stderr.splitlines() == [
        f"stmpo fonts: warning: skipped 3 file(s) of {src} that are not installable fonts: "
        "Brand.woff, web/Brand.woff2 (web fonts: After Effects cannot use them; attach the .otf "
        "or .ttf); 'Odd.ttf ' (a space or dot after the extension: rename it)"]
    assert "installed 1 (Brand.ttf)" in res.stdout
    assert [p.name for p in font_dir(home).iterdir()] == ["Brand.ttf"]


def test_only_web_fonts_are_no_fonts_with_a_warning(home: Path, tmp_path: Path) -> None:
    src = make_fonts(tmp_path / "f", Brand__woff2=b"w2")
    res = stmpo(home, "install", "--from", str(src), "--session", "s")
    assert res.returncode == 0 and res.stdout.startswith("stmpo fonts: no fonts attached")
    assert "skipped 1 file(s)" in res.stderr and "Brand.woff2 (web fonts" in res.stderr
    assert list(home.iterdir()) == []


def test_a_link_to_a_font_that_is_not_there_is_named(home: Path, tmp_path: Path) -> None:
    """A job folder whose font is a dangling link said "no fonts attached … nothing to
    install", exit 0, and nothing else: the comp then renders a substitute."""
    src = tmp_path / "f"
    src.mkdir()
    (src / "Brand.ttf").symlink_to(tmp_path / "gone" / "Brand.ttf")
    res = stmpo(home, "install", "--from", str(src), "--session", "s")
    assert res.returncode == 0 and res.stdout.startswith("stmpo fonts: no fonts attached")
    assert "Brand.ttf (a link to a file that is not there" in res.stderr, res.stderr
