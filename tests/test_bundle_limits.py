"""Deadline Cloud's own limits on a job, checked by `stmpo bundle` before it writes one
(in-process: the checks are pure)."""

from __future__ import annotations

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
