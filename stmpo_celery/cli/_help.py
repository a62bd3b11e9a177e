"""One example (or two) at the end of every command's ``--help``.

Kept in one table so every command has one and the test can check that none is missing.
"""

from __future__ import annotations

import click

#: command path (without ``stmpo``) -> example lines (each a command, then a comment)
EXAMPLES: dict[str, list[str]] = {
    "": ["stmpo render --project shot.aep --comp Main --frames 1-240 "
         "--output /r/shot_[#####].png",
         "stmpo status          # what renders on this host, per slot"],
    "render": ["stmpo render --project shot.aep --comp Main --frames 1-240 "
               "--output /r/shot_[#####].png --flower 5555",
               "# run the same command again after a failure: it renders only what is missing"],
    "plan": ["stmpo plan --frames 1-240                       # this host",
             "stmpo plan --frames 1-240 --cpus 128 --ram-gb 512  # another host"],
    "config": ["stmpo config show --profile hero"],
    "config show": ["stmpo config show --profile hero --concurrency 4",
                    "stmpo config show --json"],
    "demo": ["stmpo demo --dir /tmp/stmpo-demo --concurrency 2"],
    "doctor": ["stmpo doctor --output-dir /renders/shot   # before the first render",
               "stmpo doctor --json"],
    "bundle": ["stmpo bundle --project shot.aep --comp Main --frames 1-240 "
               "--output /r/shot_[#####].png --dest shot-bundle",
               "deadline bundle submit shot-bundle"],
    "fonts": ["stmpo fonts install --from ./fonts --session $SESSION_ID"],
    "fonts install": ["stmpo fonts install --from ./fonts --session job42-task7"],
    "fonts remove": ["stmpo fonts remove --session job42-task7"],
    "fonts list": ["stmpo fonts list --json"],
    "status": ["stmpo status                 # refreshes every second; Ctrl-C to leave",
               "stmpo status --json --once   # one JSON document, for scripts"],
    "host": ["stmpo host up --flower 0.0.0.0:5555 --flower-auth wrangler:secret",
             "stmpo host info"],
    "host up": ["stmpo host up --flower 127.0.0.1:5555",
                "stmpo host up --foreground --flower 0.0.0.0:5555 "
                "--flower-auth wrangler:secret   # under systemd"],
    "host down": ["stmpo host down", "stmpo host down --force   # even while runs use it"],
    "host info": ["stmpo host info --json"],
    "inspect": ["stmpo inspect shot.aep          # comps, render queue, footage, fonts",
                "stmpo inspect shot.aep --json"],
    "farm": ["stmpo farm submit openjd_bundle -p ProjectFile=shot.aep -p RenderBy=comp "
             "-p Comp=Main --publish /shots/sh010",
             "stmpo farm jobs"],
    "farm submit": ["stmpo farm submit shot-bundle --priority 80 --publish /shots/sh010 --json"],
    "farm worker": ["stmpo farm worker --name rh-01   # on each render host"],
    "farm jobs": ["stmpo farm jobs --json"],
    "farm wait": ["stmpo farm wait 3f9c0a1e --timeout 3600"],
    "farm cancel": ["stmpo farm cancel 3f9c0a1e"],
    "farm retry": ["stmpo farm retry 3f9c0a1e      # failed and canceled tasks again"],
    "farm remove": ["stmpo farm remove 3f9c0a1e 7d21b4c0   # ended jobs: records and folders"],
    "farm flower": ["stmpo farm flower --bind 0.0.0.0:5556 --auth wrangler:secret"],
    "versions": ["stmpo versions list /shots/sh010",
                 "stmpo versions approve /shots/sh010 v003"],
    "versions list": ["stmpo versions list /shots/sh010 --json"],
    "versions approve": ["stmpo versions approve /shots/sh010 v003 --note 'final'"],
    "versions reject": ["stmpo versions reject /shots/sh010 v002 --note 'motion blur missing'"],
}


def _walk(cmd: click.Command, path: str) -> list[tuple[str, click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd, info_name=path or "stmpo")
        for name in cmd.list_commands(ctx):  # loads lazy subcommands too
            sub = cmd.get_command(ctx, name)
            if sub is not None:
                out += _walk(sub, f"{path} {name}".strip())
    return out


def commands(root: click.Command, path: str = "") -> list[tuple[str, click.Command]]:
    """Every command under ``root`` with its path (``""`` for the root)."""
    return _walk(root, path)


def set_examples(cmd: click.Command, path: str) -> None:
    """``cmd``'s own examples (at ``path``) as its help's epilog."""
    lines = EXAMPLES.get(path)
    if lines and not cmd.epilog:
        # \b: click keeps the lines as they are (no rewrapping)
        cmd.epilog = "\b\nExamples:\n" + "\n".join(f"  {ln}" for ln in lines)


def add_examples(root: click.Command, path: str = "") -> None:
    """The examples of ``root`` (at ``path``) and of every command below it."""
    for sub_path, cmd in commands(root, path):
        set_examples(cmd, sub_path)
