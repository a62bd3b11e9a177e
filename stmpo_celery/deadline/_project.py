"""Read an After Effects project without After Effects (``stmpo inspect``), and the
submit-time checks ``stmpo bundle`` makes with what it reads.

The project is parsed with the ``py-aep`` library: compositions (frame rate, duration,
display start frame, work area), render-queue items (status, time span, output
modules: file, format, image sequence or movie, "use comp frame number"), footage items
with their files (missing ones flagged by looking on disk now, not only at save time),
and the fonts text layers use.

What aerender does with it decides the checks. ``-rqindex N`` renders item N with its
own output module; ``-comp NAME`` renders the comp's first *queued* item, or adds one
with the default output module. ``-output`` only changes the path: the output module,
not the file name, decides the format. So an item that is not queued, an item with
several output modules, a movie module split across tasks and slots, or a sequence not
numbered by comp frame (stmpo verifies frames by number) is refused before submission.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..plan import format_frames

#: output-module formats that write one file (a movie or sound): After Effects' own
#: (QuickTime, AVI, H.264, MXF OP1a, AIFF, WAV, MP3) and the containers and codecs of the
#: plug-ins that add some (HEVC, MPEG, ProRes, DNx, GIF, WebM). Every still format of After
#: Effects ends in "Sequence"; a name that is neither goes by the file name's frame token.
_MOVIE_FORMAT = re.compile(r"quicktime|avi|h\.26[45]|hevc|mpeg|mp4|mxf|dnx|prores|gif|webm|"
                           r"aiff|wav|mp3")


@dataclass
class OutputInfo:
    file: str
    format: str
    sequence: bool  #: an image sequence (frames can be split); False: one movie file
    use_comp_frame_number: bool


@dataclass
class QueueItemInfo:
    index: int  #: 1-based, as aerender -rqindex counts
    comp: str
    status: str  #: QUEUED, UNQUEUED, NEEDS_OUTPUT, DONE, RENDERING, ...
    start_frame: int
    frames: int
    outputs: list[OutputInfo] = field(default_factory=list)


@dataclass
class CompInfo:
    name: str
    frame_rate: float
    duration_s: float
    frames: int
    display_start_frame: int
    work_area_start_frame: int
    work_area_frames: int


@dataclass
class FootageInfo:
    name: str
    path: str  #: the file; for an image sequence, its folder
    sequence: bool
    missing: bool


@dataclass
class ProjectInfo:
    path: str
    version: str
    comps: list[CompInfo] = field(default_factory=list)
    queue: list[QueueItemInfo] = field(default_factory=list)
    footage: list[FootageInfo] = field(default_factory=list)
    fonts: list[str] = field(default_factory=list)  #: PostScript names text layers use

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def comp(self, name: str) -> CompInfo | None:
        return next((c for c in self.comps if c.name == name), None)


def _is_sequence(fmt: str, file: str) -> bool:
    low = fmt.strip().lower()
    if low.endswith("sequence"):
        return True
    if _MOVIE_FORMAT.search(low):
        return False
    return "[#" in os.path.basename(file)  # a format stmpo does not know: go by the name


def read_project(path: str | os.PathLike[str]) -> ProjectInfo:
    """Everything stmpo needs from ``path`` (a .aep); BadInput when it cannot be read."""
    try:
        import py_aep
    except ImportError:
        raise BadInput("reading projects needs the py-aep package: pip install py-aep") from None
    where = os.path.abspath(path)
    if not os.path.isfile(where):
        raise BadInput(f"project {where} is not a file: pass the saved .aep")
    try:
        with open(where, "rb") as fh:
            head = fh.read(12)
    except OSError as exc:
        raise BadInput(f"project {where} cannot be read ({exc.strerror}): check its "
                       "permissions") from None
    if not head.startswith(b"RIFX"):  # every binary .aep is a big-endian RIFF (RIFX) file
        what = "empty" if not head else "not an After Effects project (no RIFX header)"
        raise BadInput(f"project {where} is {what}: pass a binary .aep saved by After "
                       "Effects (an .aepx: save it as .aep)")
    declared = int.from_bytes(head[4:8], "big") + 8  # the RIFX chunk: header + its size
    actual = os.path.getsize(where)
    if len(head) < 12 or declared > actual:  # parsing it would read past its end, slowly
        raise BadInput(f"project {where} is cut short ({actual} of the {declared} bytes its "
                       "header announces): copy or save it again")
    try:
        app = py_aep.parse(where)
    except Exception as exc:  # py-aep raises many kinds on a file it cannot read
        raise BadInput(f"project {where} cannot be read as an After Effects project "
                       f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): "
                       "it may be cut short or from a newer After Effects; save it again"
                       ) from None
    proj = app.project
    info = ProjectInfo(where, str(app.version))
    for c in sorted(proj.compositions, key=lambda c: c.name):
        rate = float(c.frame_rate)
        info.comps.append(CompInfo(
            c.name, rate, float(c.duration), int(round(c.duration * rate)),
            int(c.display_start_frame), int(round(c.work_area_start * rate)),
            int(round(c.work_area_duration * rate))))
    for i, item in enumerate(proj.render_queue.items if proj.render_queue else [], 1):
        q = QueueItemInfo(i, item.comp.name, getattr(item.status, "name", str(item.status)),
                          int(item.time_span_start_frame), int(item.time_span_duration_frames))
        for om in item.output_modules:
            settings = om.get_settings()
            fmt = str(settings.get("Format", ""))
            q.outputs.append(OutputInfo(
                str(om.file), fmt, _is_sequence(fmt, str(om.file)),
                str(settings.get("Use Comp Frame Number", "true")).lower() == "true"))
        info.queue.append(q)
    for f in proj.footages:
        src = f.main_source
        file = getattr(src, "file", None)
        if not file:
            continue  # solids, placeholders: nothing on disk
        seq = bool(getattr(src, "_is_sequence", False))
        target = os.path.dirname(file) if seq else file
        missing = not os.path.exists(file if not seq else target) or (
            seq and not any(Path(target).iterdir()))
        info.footage.append(FootageInfo(f.name, target, seq, missing))
    info.fonts = sorted({u["font"].post_script_name for u in proj.used_fonts})
    return info


def render_item(info: ProjectInfo, comp: str | None, rqindex: int | None) -> QueueItemInfo | None:
    """The queue item aerender renders (``None``: ``-comp`` adds one, default module)."""
    if rqindex is not None:
        if not 1 <= rqindex <= len(info.queue):
            raise BadInput(f"render-queue item {rqindex} is not in {info.path}: its queue has "
                           f"{len(info.queue)} item(s)")
        return info.queue[rqindex - 1]
    if info.comp(str(comp)) is None:
        names = ", ".join(repr(c.name) for c in info.comps[:8]) or "none"
        raise BadInput(f"comp {comp!r} is not in {info.path}: its comps are {names} "
                       "(names are case- and space-sensitive)")
    same = sum(1 for c in info.comps if c.name == comp)
    if same > 1:
        raise BadInput(f"{same} comps of {info.path} are named {comp!r}, and aerender -comp "
                       "cannot tell them apart: rename them, or render by --rqindex")
    return next((q for q in info.queue if q.comp == comp and q.status == "QUEUED"), None)


def check_item(item: QueueItemInfo | None, *, split: bool, by_index: bool) -> None:
    """Refuse what aerender would render wrong. ``split``: frames go to several tasks or
    slots (an image-sequence bundle)."""
    if item is None:
        return  # -comp without a queued item: aerender adds one with the default module
    label = f"render-queue item {item.index} ({item.comp!r})"
    if by_index and item.status != "QUEUED":
        raise BadInput(f"{label} is {item.status}, not QUEUED: aerender -rqindex renders only "
                       "queued items; tick Render for it in After Effects' render queue and save")
    if len(item.outputs) > 1:
        raise BadInput(f"{label} has {len(item.outputs)} output modules: stmpo renders one "
                       "output per item; remove the others or give each its own item")
    if not item.outputs:
        return
    om = item.outputs[0]
    if split and not om.sequence:
        raise BadInput(f"{label} writes {om.format} (a movie), which cannot be split across "
                       "tasks and slots: set an image-sequence output module, or name a movie "
                       "output (shot.mov) to render it in one process")
    if split and not om.use_comp_frame_number:
        raise BadInput(f"{label} numbers its files from the output module's Starting #, not "
                       "by comp frame: switch on 'Use comp frame number' (stmpo checks every "
                       "frame on disk by its number)")


def font_names(folder: Path) -> set[str]:
    """PostScript names of the font files in ``folder`` (fontTools, a py-aep dependency)."""
    try:
        from fontTools.ttLib import TTFont
    except ImportError:  # pragma: no cover - py-aep depends on fontTools
        return set()
    names: set[str] = set()
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in (".otf", ".ttf", ".ttc", ".otc"):
            continue
        try:
            font = TTFont(str(p), fontNumber=0, lazy=True)
            name = font["name"].getDebugName(6)
        except Exception:  # a file that is not a font: the install step says so
            continue
        if name:
            names.add(name)
    return names


@dataclass
class SubmitCheck:
    """What the project adds to a bundle: footage to attach, and what to warn about."""

    files: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)  #: image-sequence footage folders
    warnings: list[str] = field(default_factory=list)


def check_frames(info: ProjectInfo, comp: str | None, frames: Sequence[int]) -> None:
    """The frames are the comp's: numbered from its display start frame, as aerender's
    ``-s``/``-e`` and the frame files (by comp frame number) number them."""
    c = info.comp(str(comp)) if comp is not None else None
    if c is None or not frames or c.frames <= 0:
        return
    first, last = c.display_start_frame, c.display_start_frame + c.frames - 1
    outside = [f for f in frames if not first <= f <= last]
    if outside:
        raise BadInput(f"--frames {format_frames(list(frames))} reaches past comp {c.name!r}, "
                       f"whose frames are {first}-{last} (from its display start frame): "
                       f"{len(outside)} frame(s) outside it, first {outside[0]}; pass frames "
                       "within the comp")


def submit_check(info: ProjectInfo, *, comp: str | None, rqindex: int | None, split: bool,
                 movie: bool, fonts_dir: str | None,
                 frames: Sequence[int] = ()) -> SubmitCheck:
    """The submit-time checks (BadInput on a refusal), footage and warnings."""
    item = render_item(info, comp, rqindex)
    check_item(item, split=split, by_index=rqindex is not None)
    check_frames(info, comp if comp is not None else item.comp if item else None, frames)
    if movie and item is not None and item.outputs and item.outputs[0].sequence:
        raise BadInput(f"render-queue item {item.index} writes {item.outputs[0].format} (an "
                       "image sequence), but --output names a movie: the output module "
                       "decides the format; name a sequence (shot_[#####].png) instead")
    out = SubmitCheck()
    missing = [f for f in info.footage if f.missing]
    for f in info.footage:
        if f.missing:
            continue
        target = out.dirs if f.sequence else out.files
        if f.path not in target:
            target.append(f.path)
    if missing:
        out.warnings.append(f"{len(missing)} footage item(s) are missing on this machine and "
                            "are not attached: " + "; ".join(f"{f.name} ({f.path})"
                                                          for f in missing[:5]))
    if info.fonts:
        have = font_names(Path(fonts_dir)) if fonts_dir else set()
        absent = [f for f in info.fonts if f not in have]
        if absent:
            out.warnings.append("the project uses font(s) not attached with --fonts-dir: "
                                + ", ".join(absent[:8]) + " (workers must have them "
                                "installed, or text renders with a substitute)")
    return out


def check_for_bundle(project: str, kw: dict[str, Any], *, split: bool,
                     movie: bool, frames: Sequence[int] = ()) -> SubmitCheck:
    """:func:`submit_check` for ``stmpo bundle``'s options; a file that is not a binary
    project (.aepx XML, or not a project at all) is not read, and that is said."""
    try:
        with open(project, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise BadInput(f"project {project} cannot be read ({exc.strerror})") from None
    try:
        import py_aep  # noqa: F401
    except ImportError:
        return SubmitCheck(warnings=["py-aep is not installed (pip install py-aep): the project "
                                     "was not checked and its footage is not attached"])
    if head != b"RIFX":
        return SubmitCheck(warnings=[f"{os.path.basename(project)} is not a binary .aep "
                                     "project stmpo can read: comp, render queue, footage and "
                                     "fonts were not checked, and footage is not attached"])
    return submit_check(read_project(project), comp=kw.get("comp"), rqindex=kw.get("rqindex"),
                        split=split, movie=movie, fonts_dir=kw.get("fonts_dir"),
                        frames=frames)


def describe(info: ProjectInfo) -> list[str]:
    """``stmpo inspect``'s text report, one fact a line."""
    lines = [f"project {info.path} (After Effects {info.version})", "comps:"]
    for c in info.comps:
        lines.append(f"  {c.name!r}: {c.frame_rate:g} fps, {c.frames} frames "
                     f"({c.duration_s:g} s), display start frame {c.display_start_frame}, "
                     f"work area {c.work_area_start_frame}+{c.work_area_frames}")
    lines.append("render queue:" if info.queue else "render queue: empty")
    for q in info.queue:
        lines.append(f"  {q.index}: {q.comp!r} {q.status}, frames {q.start_frame}"
                     f"+{q.frames}")
        for om in q.outputs:
            kind = "image sequence" if om.sequence else "movie"
            numbering = "" if om.use_comp_frame_number else ", NOT numbered by comp frame"
            lines.append(f"     output: {om.format} ({kind}{numbering}) -> "
                         f"{om.file or '(no file set)'}")
    lines.append("footage:" if info.footage else "footage: none")
    for f in info.footage:
        what = "sequence folder" if f.sequence else "file"
        lines.append(f"  {f.name}: {what} {f.path}" + ("  MISSING" if f.missing else ""))
    lines.append("fonts: " + (", ".join(info.fonts) or "none"))
    return lines


def output_from_project(project: str, kw: dict[str, Any]) -> str:
    """``--output`` when it is not given: the file of the output module aerender will
    use, so the module's format (sequence or movie) picks the bundle."""
    info = read_project(project)
    item = render_item(info, kw.get("comp"), kw.get("rqindex"))
    if item is None or len(item.outputs) != 1 or not item.outputs[0].file:
        what = ("no queued render-queue item with an output file" if item is None
                else f"render-queue item {item.index} has no single output module with a file")
        raise BadInput(f"--output is not given and {what}: pass --output")
    om = item.outputs[0]
    if om.sequence and "[#" not in os.path.basename(om.file):
        raise BadInput(f"render-queue item {item.index} writes {om.format} to {om.file}, a "
                       "name without a [#####] frame token: pass --output with one")
    if not om.sequence and "[#" in os.path.basename(om.file):
        raise BadInput(f"render-queue item {item.index} writes {om.format} (a movie) to "
                       f"{om.file}, a name with a frame token: pass --output shot.mov")
    return om.file
