"""An option given twice is refused (runs in the ``stmpo`` process, before any command).

click lets the last of a repeated option win in silence, so a wrapper that appends
``--frames 7-8`` to a command line already holding ``--frames 1-6`` rendered two frames
and said OK, and ``--mfr --no-mfr`` quietly turned MFR off. Pure: reads the command line
against the commands' declared options, touches nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import click


def _options(command: click.Command) -> dict[str, click.Option]:
    """Every spelling of each of ``command``'s options (``--mfr`` and ``--no-mfr`` alike)."""
    out: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                out[name] = param
    return out


def repeated_option(group: click.Group, args: Sequence[str]) -> tuple[str, str] | None:
    """The first option of the command line given twice, as (first spelling, second
    spelling), or None. Options that may repeat (``multiple``, counters) are not counted;
    a command's options are counted apart from its group's."""
    ctx = click.Context(group)
    command: click.Command = group
    i = 0
    while True:
        spelled = _options(command)
        seen: dict[str, str] = {}
        sub: click.Command | None = None
        while i < len(args) and sub is None:
            token = args[i]
            i += 1
            if token == "--":
                return None
            name, eq, _ = token.partition("=") if token.startswith("--") else (token, "", "")
            option = spelled.get(name)
            if option is not None:
                if not (option.multiple or option.count) and option.name is not None:
                    if option.name in seen:
                        return seen[option.name], name
                    seen[option.name] = name
                if not option.is_flag and not eq:
                    i += option.nargs  # its value, whatever it looks like
            elif isinstance(command, click.Group) and not token.startswith("-"):
                sub = command.get_command(ctx, token)
                if sub is None:
                    return None  # click says the command is unknown
        if sub is None:
            return None
        command = sub
