"""aerender log parsing: frame numbering, distinct counting, strong errors, warnings."""

from __future__ import annotations

import pytest

from stmpo_celery.aerender._log import (
    TRANSLATED_WARNING,
    AerenderLog,
    AeWarning,
    CompFinished,
    CompStarted,
    FrameDone,
    Launched,
    StrongError,
)

REAL_LOG = """\
aerender version 24.6x1
PROGRESS: Launching After Effects...
PROGRESS: ...After Effects successfully launched
PROGRESS:  4/17/2024 11:52:38 AM: Starting composition Comp 1.
PROGRESS:      Start: 0:00:04:04
PROGRESS:      End: 0:00:04:06
PROGRESS:      Duration: 0:00:00:03 (3)
PROGRESS:      Frame Rate: 24.00 (comp)
PROGRESS:  0:00:04:04 (100): 1 Seconds
PROGRESS:  0:00:04:05 (101): 0 Seconds
PROGRESS:  0:00:04:06 (102): 2 Seconds
PROGRESS:  4/17/2024 11:53:10 AM: Finished composition Comp 1.
PROGRESS:  Total Time Elapsed: 32 Seconds
"""


def feed_all(log: AerenderLog, text: str) -> list[object]:
    events: list[object] = []
    for line in text.splitlines(keepends=True):
        events.extend(log.feed(line))
    return events


def frame_line(number: int, tc: str = "0:00:00:01", tail: str = ": 1 Seconds") -> str:
    return f"PROGRESS:  {tc} ({number}){tail}"


def test_real_log_events_in_order() -> None:
    log = AerenderLog(100, 102)
    events = feed_all(log, REAL_LOG)
    assert events == [
        Launched(),
        CompStarted("Comp 1"),
        FrameDone(100, 100, "0:00:04:04", 1.0),
        FrameDone(101, 101, "0:00:04:05", 0.0),
        FrameDone(102, 102, "0:00:04:06", 2.0),
        CompFinished(),
    ]
    assert log.frames_done == {100, 101, 102}
    assert log.done_count == 3
    assert log.launched and log.finished
    assert log.errors == [] and log.warnings == []
    assert log.numbering == "timecode"  # the header names Start and Frame Rate


def test_settings_block_is_not_a_frame() -> None:
    log = AerenderLog(0, 10)
    assert log.feed("PROGRESS:      Duration: 0:00:00:03 (3)") == []
    assert log.feed("PROGRESS:      Start: 0:00:00:00") == []
    assert log.done_count == 0


@pytest.mark.parametrize("base", [0, 1])
def test_relative_numbering_resolves_to_absolute(base: int) -> None:
    log = AerenderLog(200, 204)
    for n in range(base, base + 5):
        log.feed(frame_line(n))
    assert log.frames_done == set(range(200, 205))
    assert log.done_count == 5
    assert log.numbering == f"relative-{base}"


def test_mode_is_decided_once_from_the_first_frame_line() -> None:
    log = AerenderLog(50, 60)
    (first,) = log.feed(frame_line(1))  # relative, 1-based
    (second,) = log.feed(frame_line(55))  # would be absolute alone, but mode is relative
    assert isinstance(first, FrameDone) and first.frame == 50
    assert isinstance(second, FrameDone) and second.frame is None  # 50+55-1 is out of range
    assert log.frames_done == {50}
    assert log.done_count == 2


def test_unknowable_numbering_still_counts() -> None:
    log = AerenderLog(500, 510)
    (ev,) = log.feed(frame_line(7))
    assert ev == FrameDone(7, None, "0:00:00:01", 1.0)
    log.feed(frame_line(8))
    assert log.frames_done == set()
    assert log.done_count == 2
    assert log.numbering == "unknown"


def test_out_of_order_and_repeated_numbers_count_once() -> None:
    log = AerenderLog(10, 17)
    for n in [12, 10, 13, 11, 11, 16, 14, 17, 15, 12]:
        log.feed(frame_line(n))
    assert log.done_count == 8
    assert log.frames_done == set(range(10, 18))


def test_negative_frames() -> None:
    log = AerenderLog(-5, -3)
    for n in (-5, -4, -3):
        log.feed(frame_line(n, tc=f"-0:00:00:0{-n}"))
    assert log.frames_done == {-5, -4, -3}


@pytest.mark.parametrize(
    ("line", "tc", "seconds"),
    [
        ("PROGRESS:  0;00;04;18 (118): 1 Seconds", "0;00;04;18", 1.0),
        ("PROGRESS:  0:00:04;18 (118): 3 Seconds", "0:00:04;18", 3.0),
        ("PROGRESS:  0:00:04:18 (118): 4 Sekunden", "0:00:04:18", 4.0),
        ("PROGRESS:  0:00:04:18 (118): 5 秒", "0:00:04:18", 5.0),
        ("PROGRESS:  0:00:04:18 (118): 6秒", "0:00:04:18", 6.0),
        ("PROGRESS:  0:00:04:18 (118): 1,5 secondes", "0:00:04:18", 1.5),
        ("PROGRESS:  0:00:04:18 (118):", "0:00:04:18", None),
        ("PROGRESS:  0:00:04:18 (118)", "0:00:04:18", None),
        ("PROGRESS:0:00:04:18(  118  ):   7 Seconds", "0:00:04:18", 7.0),
        ("PROGRESS:     0:00:04:18   ( 118 ) :  8 Seconds", "0:00:04:18", 8.0),
        ("PROGRESS:  118 (118): 1 Seconds", "118", 1.0),
        # field rendering: the number carries the field order (nexrender #897)
        ("PROGRESS:  0:00:04:18 (118U): 2 Seconds", "0:00:04:18", 2.0),
        ("PROGRESS:  0:00:04:18 (118L): 2 Seconds", "0:00:04:18", 2.0),
    ],
)
def test_frame_line_variants(line: str, tc: str, seconds: float | None) -> None:
    log = AerenderLog(100, 149)
    assert log.feed(line) == [FrameDone(118, 118, tc, seconds)]


@pytest.mark.parametrize("ending", ["\r\n", "\r", "\n", ""])
def test_line_endings(ending: str) -> None:
    log = AerenderLog(1, 3)
    for n in (1, 2, 3):
        events = log.feed(frame_line(n) + ending)
        assert [type(e) for e in events] == [FrameDone]
    assert log.frames_done == {1, 2, 3}
    assert all("\r" not in t and "\n" not in t for t in log.tail())


def test_stray_carriage_return_separates_lines() -> None:
    log = AerenderLog(1, 2)
    events = log.feed(frame_line(1) + "\r" + frame_line(2) + "\r\n")
    assert [e.frame for e in events if isinstance(e, FrameDone)] == [1, 2]


@pytest.mark.parametrize(
    "line",
    [
        "aerender ERROR: No comp was found with the given name.",
        "PROGRESS: aerender ERROR: something",
        "aerender error: lower case",
        "After Effects error: Unable to allocate enough memory ( 23 :: 46 )",
        "PROGRESS: After Effects error: Can't write file",
        "aerender ERROR: After Effects error: out of memory",
        "AFTER EFFECTS ERROR: shouting",
    ],
)
def test_strong_errors(line: str) -> None:
    log = AerenderLog(0, 1)
    assert log.feed(line + "\r\n") == [StrongError(line)]
    assert log.errors == [line]


@pytest.mark.parametrize(
    "line",
    [
        'PROGRESS: Unable to load font "Foo" — error 5',
        "PROGRESS: Error correction: enabled",
        "PROGRESS:  Output To: /renders/error_shot_[####].png",
        "PROGRESS: 0 errors",
        "After Effects warning: something about errors",
        # a comp or an output folder named with a failure's words: a healthy render
        "PROGRESS:  4/17/2024 11:52:38 AM: Starting composition Could not read from source.",
        "PROGRESS:  4/17/2024 11:52:38 AM: Starting composition Render will cause render to "
        "have frames outside of range.",
        "PROGRESS:      Output To: /r/could not read from source/x_[#####].png",
        "PROGRESS:  12/5/2026 11:52:38 PM: Finished composition logged one error.",
    ],
)
def test_benign_lines_with_error_are_not_strong(line: str) -> None:
    log = AerenderLog(0, 1)
    events = log.feed(line)
    assert not any(isinstance(e, StrongError) for e in events)
    assert log.errors == []


def test_warnings_and_missing_fonts() -> None:
    log = AerenderLog(0, 1)
    (fonts,) = log.feed("WARNING:After Effects warning: Project has missing fonts\r\n")
    assert isinstance(fonts, AeWarning)
    assert "missing fonts" in fonts.text
    (plain,) = log.feed("PROGRESS: Project has missing fonts")
    assert isinstance(plain, AeWarning) and "missing fonts" in plain.text
    (other,) = log.feed("After Effects warning: footage is missing")
    assert isinstance(other, AeWarning)
    assert len(log.warnings) == 3
    assert log.errors == []


def test_comp_name_quotes_and_period_are_stripped() -> None:
    log = AerenderLog(0, 1)
    line = "PROGRESS:  4/17/2024 11:52:38 AM: Starting composition \u201cMain; $(x) 日本\u201d."
    assert log.feed(line) == [CompStarted("Main; $(x) 日本")]


def test_tail_keeps_last_non_empty_lines() -> None:
    log = AerenderLog(0, 100, tail_lines=3)
    for line in ["a", "", "b", "   \r\n", "c", "d\r\n", ""]:
        log.feed(line)
    assert log.tail() == ["b", "c", "d"]


def test_bad_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        AerenderLog(10, 9)


# --- fatal lines without a strong marker, and benign ones with it -------------------------
# Each line is the text After Effects / aerender (or a plug-in inside it) prints; the
# patterns are the ones Thinkbox Deadline's AfterEffects plugin fails on.
FATAL_LINES = [
    "aerender ERROR: Unable to obtain a license. Please log in to Creative Cloud.",
    "PROGRESS: Unable to obtain a license for After Effects",
    "unexpected failure during application startup",
    "aerender ERROR: unexpected failure during application startup",
    "Trapcode Particular: Another user is using the same serial number.",
    "Invalid Serial Number",
    "PROGRESS: After Effects logged one error; check the log.",
    "After Effects error: Rendering error while writing to file (/renders/shot_00012.png). "
    "Unable to delete existing file. ( 33 :: 7 )",
    "Rendering error while writing to file (D:\\out\\a.mov)",
    "OMP: Error #15: Initializing libiomp5md.dll, but found libiomp5md.dll already initialized.",
    "error: internal verification failure, sorry! {unexpected match name}",
    # bare, exit 0, black frames (aws-deadline/deadline-cloud-for-after-effects #339)
    "Could not read from source. Please check the settings and try again.",
    # verbatim After Effects 17.0.5 (nexrender #342): "may have blank frames"
    "WARNING:After Effects warning: timeSpanStart of -0,87 seconds will cause render to have "
    "frames outside of range defined by comp displayStartTime (0,87) and end of comp "
    "duration (26,63). Render will succeed, but may have blank frames.",
]


@pytest.mark.parametrize("line", FATAL_LINES)
def test_fatal_lines_without_marker_fail_the_chunk(line: str) -> None:
    log = AerenderLog(0, 1)
    (ev,) = log.feed(line + "\r\n")
    assert isinstance(ev, StrongError) and ev.text == line
    assert log.errors == [line]


def test_licence_and_omp_failures_say_what_to_do() -> None:
    log = AerenderLog(0, 1)
    (lic,) = log.feed("aerender ERROR: Unable to obtain a license.")
    (omp,) = log.feed(FATAL_LINES[9])
    assert isinstance(lic, StrongError) and "ae_render_only_node.txt" in lic.hint
    assert isinstance(omp, StrongError) and "KMP_DUPLICATE_LIB_OK=TRUE" in omp.hint


MISSING_EFFECT_LINES = [
    "INFO:This project contains a reference to a missing effect. Please install the "
    "following effect to restore this reference. ( Particular )",
    "This project contains a reference to a missing effect.",
    "aerender ERROR: Unable to render: a layer has missing dependencies",
]


def test_missing_dependencies_list_comes_with_the_next_line() -> None:
    # After Effects names the missing dependencies on the line after the announcement.
    log = AerenderLog(0, 1)
    assert log.feed("INFO:The following layer dependencies are missing") == []
    (ev,) = log.feed("Particular (Trapcode)")
    assert isinstance(ev, StrongError)
    assert ev.text == "INFO:The following layer dependencies are missing Particular (Trapcode)"
    cut = AerenderLog(0, 1)
    assert cut.feed("INFO:The following layer dependencies are missing") == []
    (late,) = cut.close()  # the output ended: the failure is not lost
    assert isinstance(late, StrongError) and cut.errors
    assert AerenderLog(0, 1).close() == []
    progress = AerenderLog(0, 1)
    progress.feed("INFO:The following layer dependencies are missing")
    events = progress.feed(frame_line(0, tc="0:00:00:00"))  # no list: a frame line follows
    assert [type(e) for e in events] == [StrongError, FrameDone]


def test_a_dependency_list_of_fonts_only_is_the_font_warning_not_a_missing_effect() -> None:
    """A real log (nexrender #148) words a missing font as a missing dependency: it is the
    font policy's loud warning, not a failure whose hint says to install an effect."""
    fonts = ("WARNING:After Effects warning: Grouped_Message_{some layers have missing "
             "dependencies. |||a layer has missing dependencies.###@0 dependencies are "
             "missing:}Text Layer: Font family: Roboto, Font style: Black")
    log = AerenderLog(0, 1)
    (ev,) = log.feed(fonts)
    assert isinstance(ev, AeWarning) and log.errors == []
    # the list on the line after the header: fonts only (whatever their names) warn,
    # anything else among them (an effect, however named) fails
    for listed, kind in (
            ("Text Layer: Font family: Roboto, Font style: Black", AeWarning),
            ("Effects Title: Font family: Roboto, Font style: Black", AeWarning),
            ("Title: Font family: Plugin Sans, Font style: Bold; Sub: Font family: Roboto, "
             "Font style: Black", AeWarning),
            ("Font family: Roboto; Effect: Particular (Trapcode)", StrongError),
            ("Text Layer: Font family: Roboto, Font style: Black; Solid 1: Particular "
             "(Trapcode)", StrongError)):
        log = AerenderLog(0, 1)
        log.feed("INFO:The following layer dependencies are missing")
        (ev,) = log.feed(listed)
        assert isinstance(ev, kind), listed


@pytest.mark.parametrize("line", MISSING_EFFECT_LINES)
def test_missing_effects_fail_unless_ignored(line: str) -> None:
    strict = AerenderLog(0, 1)
    (ev,) = strict.feed(line)
    assert isinstance(ev, StrongError) and "--ignore-missing-effects" in ev.hint
    lenient = AerenderLog(0, 1, ignore_missing_effects=True)
    (warn,) = lenient.feed(line)
    assert isinstance(warn, AeWarning) and warn.text == line
    assert lenient.errors == [] and lenient.warnings == [line]


@pytest.mark.parametrize(
    "line",
    [
        "After Effects error: Auto-save failed: the project folder is not writable.",
        "aerender ERROR: After Effects error: Unable to auto-save the project ( 5027 :: 12 )",
        "PROGRESS: After Effects error: Autosave could not write the file",
    ],
)
def test_auto_save_errors_are_warnings(line: str) -> None:
    log = AerenderLog(0, 1)
    (ev,) = log.feed(line)
    assert isinstance(ev, AeWarning)
    assert log.errors == [] and log.warnings == [line]


def test_auto_save_in_a_path_does_not_hide_a_real_error() -> None:
    log = AerenderLog(0, 1)
    line = "auto-save folder: aerender ERROR: No comp was found with the given name."
    (ev,) = log.feed(line)
    assert isinstance(ev, StrongError)


# --- frames from the absolute timecode -------------------------------------------------------
HEADER = """\
PROGRESS:  12/5/2026 11:52:38 PM: Starting composition Main.
PROGRESS:  Render Settings: Best Settings
PROGRESS:      Start: {start}
PROGRESS:      End: {end}
PROGRESS:      Duration: 0:00:00:08 (8)
PROGRESS:      Frame Rate: {fps} (comp)
"""


def test_mfr_out_of_order_frames_follow_the_timecode_not_the_count() -> None:
    # MFR: frames finish out of order and the parenthesised number counts frames done.
    log = AerenderLog(100, 107)
    feed_all(log, HEADER.format(start="0:00:04:04", end="0:00:04:11", fps="24.00"))
    order = [102, 100, 103, 101, 106, 104]
    events = []
    for count, frame in enumerate(order, 1):
        tc = f"0:00:04:{frame - 96:02d}"
        events += log.feed(f"PROGRESS:  {tc} ({count}): 1 Seconds")
    assert [e.frame for e in events if isinstance(e, FrameDone)] == order
    assert log.frames_done == set(order)  # 105 and 107 were not reported: not done
    assert log.done_count == 6
    assert log.numbering == "timecode"


def test_a_translated_settings_block_still_anchors_the_timecode() -> None:
    """A translated build words Start and Frame Rate in its own language: found by shape
    (the first labelled lone timecode, a labelled ``25,00 (...)``), MFR frames whose
    number counts frames done are still attributed by their timecode, not misread as
    frames 12 and 10 (whole frames then deleted as suspect)."""
    log = AerenderLog(10, 40)
    feed_all(log, "PROGRESS:  05.12.2026 23:52:38: Komposition Main wird gestartet.\n"
                  "PROGRESS:  Rendereinstellungen: Optimale Einstellungen\n"
                  "PROGRESS:      Anfang: 0:00:00:10\n"
                  "PROGRESS:      Ende: 0:00:01:15\n"
                  "PROGRESS:      Dauer: 0:00:01:06 (31)\n"
                  "PROGRESS:      Framerate: 25,00 (Komp.)\n")
    events = [e for line in ("PROGRESS:  0:00:00:21 (12): 1 Sekunden",
                             "PROGRESS:  0:00:00:19 (10): 1 Sekunden",
                             "PROGRESS:  0:00:00:10 (1): 1 Sekunden") for e in log.feed(line)]
    assert [e.frame for e in events if isinstance(e, FrameDone)] == [21, 19, 10]
    assert log.numbering == "timecode"
    assert log.warnings == [TRANSLATED_WARNING]  # said once: its failure lines are unread
    english = AerenderLog(100, 107)
    feed_all(english, HEADER.format(start="0:00:04:04", end="0:00:04:11", fps="24.00"))
    assert english.warnings == []


def test_timecode_is_anchored_on_the_header_start_not_time_zero() -> None:
    # A comp whose display starts at 01:00:00:00 prints that timecode for frame 0.
    log = AerenderLog(10, 12)
    feed_all(log, HEADER.format(start="1:00:00:10", end="1:00:00:12", fps="25.00"))
    (ev,) = log.feed("PROGRESS:  1:00:00:11 (2): 1 Seconds")
    assert isinstance(ev, FrameDone) and ev.frame == 11


def test_drop_frame_timecode_crosses_a_minute() -> None:
    # 29.97 drop-frame: 0;00;59;29 is followed by 0;01;00;02.
    log = AerenderLog(1000, 1003)
    feed_all(log, HEADER.format(start="0;00;59;28", end="0;01;00;03", fps="29.97"))
    frames = [e.frame for line in ("0;00;59;29", "0;01;00;02", "0;01;00;03")
              for e in log.feed(f"PROGRESS:  {line} (1): 0 Seconds") if isinstance(e, FrameDone)]
    assert frames == [1001, 1002, 1003]


def test_timecode_outside_the_chunk_is_unknown_and_without_header_the_number_is_used() -> None:
    log = AerenderLog(0, 3)
    feed_all(log, HEADER.format(start="0:00:00:00", end="0:00:00:03", fps="24.00"))
    (ev,) = log.feed("PROGRESS:  0:00:01:00 (24): 1 Seconds")
    assert isinstance(ev, FrameDone) and ev.frame is None
    bare = AerenderLog(200, 204)
    (ev2,) = bare.feed(frame_line(1))
    assert isinstance(ev2, FrameDone) and ev2.frame == 200 and bare.numbering == "relative-1"
