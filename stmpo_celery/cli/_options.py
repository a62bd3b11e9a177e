"""Click options made from the settings table: one declaration per setting, offered on
every command the table names, with its default and environment variable in the help."""

from __future__ import annotations

from collections.abc import Callable
from itertools import zip_longest
from typing import Any

import click

from ..config import SETTINGS, Command, RenderOptions, Setting, for_command, resolve
from ..errors import BadInput
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


def _help(s: Setting, command: Command) -> str:
    if command is Command.BUNDLE:  # written into the job; the submitter's env is not read
        return f"{s.help} [default: the worker's own; job parameter {s.bundle}]"
    default = s.shown(s.default) if s.default is not None else (s.auto or "none")
    if s.kind is bool:
        default = "on" if s.default else "off"
    return f"{s.help} [default: {default}; env {s.env}]"


def option_for(s: Setting, command: Command) -> Callable[[F], F]:
    """The click option of one setting; None when not given, so lower layers apply."""
    kind: Any = click.Choice(list(s.choices)) if s.choices else (
        FINITE if s.kind is float else int if s.kind is int else None)
    return click.option(*_decls(s), s.name, type=kind, default=None, help=_help(s, command))


def profile_option(command: Command) -> Callable[[F], F]:
    text = ("Profile the workers apply (a name they know, or a TOML file) [default: the "
            "worker's own; job parameter Profile]." if command is Command.BUNDLE else
            "Profile name (hero, farm) or TOML file [env STMPO_PROFILE].")
    return click.option("--profile", help=text)


def setting_options(command: Command) -> Callable[[F], F]:
    """Decorate a command with ``--profile`` and every setting ``command`` takes."""
    def decorate(f: F) -> F:
        for s in reversed(for_command(command)):
            f = option_for(s, command)(f)
        return profile_option(command)(f)
    return decorate


def resolved_settings(kw: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Every setting's value and source: flags over environment over profile over default."""
    flags = {k: kw.get(k) for k in SETTINGS}
    profile = kw.get("profile")
    if profile is not None and not str(profile).strip():  # "" would fall back in silence
        raise BadInput("--profile is empty: name a profile or a .toml file, or leave "
                       "--profile out")
    return resolve(flags, profile)


def options_from(kw: dict[str, Any]) -> RenderOptions:
    """A command's keyword arguments (flags and setting options) as :class:`RenderOptions`."""
    resolved = resolved_settings(kw)
    values = {k: v for k, (v, _src) in resolved.items()}
    return RenderOptions(
        project=kw["project"], frames=kw["frames"], output=kw["output"],
        comp=kw.get("comp"), rqindex=kw.get("rqindex"), aerender=kw.get("aerender"),
        summary=kw.get("summary"), rs_template=kw.get("rs_template"),
        om_template=kw.get("om_template"), mem_usage=kw.get("mem_usage"),
        continue_on_missing_footage=bool(kw.get("continue_on_missing_footage")),
        verbose=bool(kw.get("verbose")), progress=kw.get("progress") or "auto",
        flower=kw.get("flower"), flower_url_prefix=kw.get("flower_url_prefix"),
        flower_linger=float(kw.get("flower_linger") or 0.0),
        sources={k: src for k, (_v, src) in resolved.items() if src != "default"},
        **values,
    )
