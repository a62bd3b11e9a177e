"""Check the output kind and create every output directory before rendering.

Run by the ``OutputDirectories`` job environment (embedded in the templates; this file
is the source the templates embed)::

    python prepare_output.py --kind image|movie --output-dir DIR --file-name NAME

Each path is its own argument, never a joined list, so commas, spaces and non-ASCII
survive. The directories created are ``DIR`` and the folder part of ``NAME`` below it
(``shots/a_[#####].png`` -> ``DIR/shots``).

The kind check stops a bundle from silently writing the wrong thing: the image-sequence
bundle splits frames across tasks, so a movie name (no ``[#####]`` token) would have
every task overwrite the same file; the movie bundle renders in one process, so a
sequence name belongs in the image-sequence bundle. Standard library only.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys

_TOKEN = re.compile(r"\[#+\]")


def say(line: str) -> None:
    """One stdout line: a path with a line break cannot start a second directive."""
    print(line.replace("\r", "\\r").replace("\n", "\\n"), flush=True)


def fail(message: str, code: int = 2) -> int:
    say("openjd_fail: " + " ".join(message.split()))
    return code


def check_kind(kind: str, file_name: str) -> str | None:
    """An error message when ``file_name`` does not fit the bundle's ``kind``."""
    if not file_name.strip():
        return "the output file name is empty: set OutputFileName, e.g. shot_[#####].png"
    parts = re.split(r"[\\/]", file_name)
    if os.path.isabs(file_name) or re.match(r"^[A-Za-z]:", file_name) or ".." in parts:
        return (f"OutputFileName {file_name!r} leaves OutputDir: the job's output is only "
                "what lands inside OutputDir, so name a file (or a subfolder and a file) "
                "relative to it, without .. or a drive or root")
    tokens = _TOKEN.findall(os.path.basename(file_name))
    if kind == "image" and not tokens:
        return (f"OutputFileName {file_name!r} has no [#####] frame token, so it names a movie: "
                "this bundle renders image sequences across many tasks and every task would "
                "overwrite that one file. Add a token (shot_[#####].png) or submit the movie "
                "bundle (openjd_bundle/movie)")
    if kind == "movie" and tokens:
        return (f"OutputFileName {file_name!r} has a frame token, so it names an image "
                "sequence: submit the image-sequence bundle (openjd_bundle), which spreads "
                "its frames over tasks and slots, or name a movie file (shot.mov)")
    return None


def directories(output_dir: str, file_name: str) -> list[str]:
    """``output_dir`` and the folder of ``file_name`` inside it, absolute, in order."""
    out: list[str] = []
    for d in (output_dir, os.path.dirname(os.path.join(output_dir, file_name))):
        d = os.path.abspath(d)
        if d not in out:
            out.append(d)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["image", "movie"], required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--file-name", required=True)
    args = parser.parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):  # the runtime reads stdout as UTF-8
        sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace")
    if not args.output_dir.strip():
        return fail("the output directory is empty: set OutputDir")
    error = check_kind(args.kind, args.file_name)
    if error:
        return fail(error)
    for d in directories(args.output_dir, args.file_name):
        existed = os.path.isdir(d)
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as exc:
            return fail(f"cannot create output directory {d!r}: {exc.strerror or exc}")
        if not os.access(d, os.W_OK):
            return fail(f"output directory {d!r} is not writable by this worker's user")
        say(f"output directory {'exists' if existed else 'created'}: {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
