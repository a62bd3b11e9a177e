"""Click options made from the settings table: one declaration per setting, offered on
every command the table names, with its default and environment variable in the help."""

from __future__ import annotations

from collections.abc import Callable
from itertools import zip_longest
from typing import Any

import click

from ..config import Command, Setting, for_command
from ._finite import FINITE

F = Callable[..., Any]


def _decls(s: Setting) -> list[str]:
    dashed = s.name.replace("_", "-")
    if s.kind is bool:
        decls = [f"--{dashed}/--no-{dashed}"]
        for on, off in zip_longest(s.aliases, s.off_aliases):
            decls.append(f"{on or ' '}/{off}" if off else str(on))
        return decls
    return [f"--{dashed}", *s.aliases]


def _help(s: Setting) -> str:
    default = s.shown(s.default) if s.default is not None else (s.auto or "none")
    if s.kind is bool:
        default = "on" if s.default else "off"
    return f"{s.help} [default: {default}; env {s.env}]"


def option_for(s: Setting) -> Callable[[F], F]:
    """The click option of one setting; None when not given, so lower layers apply."""
    kind: Any = click.Choice(list(s.choices)) if s.choices else (
        FINITE if s.kind is float else int if s.kind is int else None)
    return click.option(*_decls(s), s.name, type=kind, default=None, help=_help(s))


def profile_option(f: F) -> F:
    return click.option("--profile", help="Profile name (hero, farm) or TOML file "
                                          "[env STMPO_PROFILE].")(f)


def setting_options(command: Command) -> Callable[[F], F]:
    """Decorate a command with ``--profile`` and every setting ``command`` takes."""
    def decorate(f: F) -> F:
        for s in reversed(for_command(command)):
            f = option_for(s)(f)
        return profile_option(f)
    return decorate
