"""Per-user font install on Windows (no administrator rights), for the font sessions.

Windows 10 1809 and later load a user's own fonts from
``%LOCALAPPDATA%\\Microsoft\\Windows\\Fonts`` through values under
``HKCU\\Software\\Microsoft\\Windows NT\\CurrentVersion\\Fonts`` (value name = a label,
data = the font file's full path). A process started later by the same user (aerender
and After Effects) sees such a font once it is also added to the running logon session
with ``AddFontResourceExW``; ``WM_FONTCHANGE`` tells running programs.

:func:`register` does the three steps for a file already copied into the folder,
:func:`unregister` undoes them before the file is deleted (a loaded font file cannot be
deleted). PostScript Type 1 fonts are added as their ``.pfm|.pfb`` pair for the session
only (Windows keeps no per-user registry entry for them); ``.pfb``/``.afm`` files on
their own are just copied.

Importing this module is safe on every platform; off Windows the functions that touch
the system raise :class:`OSError` (and :func:`broadcast_font_change` does nothing).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

FONTS_KEY = r"Software\Microsoft\Windows NT\CurrentVersion\Fonts"
_HWND_BROADCAST = 0xFFFF
_WM_FONTCHANGE = 0x001D
_SMTO_ABORTIFHUNG = 0x0002
_KINDS = {".ttf": "TrueType", ".ttc": "TrueType", ".otf": "OpenType", ".otc": "OpenType",
          ".fon": "Raster", ".fnt": "Raster"}


def local_appdata(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("LOCALAPPDATA")
    if base:
        return Path(base)
    home = env.get("USERPROFILE") or env.get("HOME") or str(Path.home())
    return Path(home) / "AppData" / "Local"


def user_font_dir(env: Mapping[str, str] | None = None) -> Path:
    """The current user's own font folder."""
    return local_appdata(env) / "Microsoft" / "Windows" / "Fonts"


def value_name(path: Path) -> str | None:
    """The registry label of a font file, or None for files Windows does not register.
    It holds the whole file name: ``Foo.ttf`` and ``Foo.ttc`` are both TrueType, and
    labels made of the stem alone were one value for two fonts."""
    kind = _KINDS.get(path.suffix.lower())
    return f"{path.name} [stmpo] ({kind})" if kind else None


def legacy_value_name(path: Path) -> str | None:
    """The label earlier versions gave ``path`` (its stem alone): removed with the font
    when it still names this file."""
    kind = _KINDS.get(path.suffix.lower())
    return f"{path.stem} [stmpo] ({kind})" if kind else None


def resource_name(path: Path) -> str | None:
    """What ``AddFontResourceExW`` takes for ``path``: the file, a ``.pfm|.pfb`` pair for
    Type 1, or None (``.pfb``/``.afm`` alone, which come with their ``.pfm``)."""
    suffix = path.suffix.lower()
    if suffix in _KINDS:
        return str(path)
    if suffix == ".pfm":
        for ext in (".pfb", ".PFB"):
            pfb = path.with_suffix(ext)
            if pfb.exists():
                return f"{path}|{pfb}"
    return None


class FontNotLoadable(OSError):
    """Windows refused to load a font file (``AddFontResourceExW``): the file, not the
    host, is at fault."""


def register(path: Path) -> None:
    """Register the font file ``path`` for the current user and this logon session."""
    if sys.platform != "win32":
        raise OSError("per-user font registration is for Windows only")
    import ctypes
    import winreg

    name = value_name(path)
    if name is not None:
        with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, FONTS_KEY, 0,
                                winreg.KEY_SET_VALUE) as key:
            winreg.SetValueEx(key, name, 0, winreg.REG_SZ, str(path))
    resource = resource_name(path)
    if resource is not None:
        gdi32 = ctypes.WinDLL("gdi32", use_last_error=True)
        gdi32.AddFontResourceExW.argtypes = [ctypes.c_wchar_p, ctypes.c_uint32, ctypes.c_void_p]
        if gdi32.AddFontResourceExW(resource, 0, None) == 0:
            raise FontNotLoadable(ctypes.get_last_error(),
                                  f"AddFontResourceExW failed for {resource}")


def unregister(path: Path) -> None:
    """Undo :func:`register` so that ``path`` can be deleted (each step best effort)."""
    if sys.platform != "win32":
        raise OSError("per-user font registration is for Windows only")
    import ctypes
    import winreg

    resource = resource_name(path)
    if resource is not None:
        gdi32 = ctypes.WinDLL("gdi32", use_last_error=True)
        gdi32.RemoveFontResourceExW.argtypes = [ctypes.c_wchar_p, ctypes.c_uint32,
                                                ctypes.c_void_p]
        for _ in range(16):  # every AddFontResource counts once
            if not gdi32.RemoveFontResourceExW(resource, 0, None):
                break
    for name, only_if_ours in ((value_name(path), False), (legacy_value_name(path), True)):
        if name is None:
            continue
        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, FONTS_KEY, 0,
                                winreg.KEY_SET_VALUE | winreg.KEY_QUERY_VALUE) as key:
                if only_if_ours and winreg.QueryValueEx(key, name)[0] != str(path):
                    continue  # another font's (a Foo.ttc beside this Foo.ttf)
                winreg.DeleteValue(key, name)
        except FileNotFoundError:
            pass


def broadcast_font_change() -> None:
    """Tell running programs that the font table changed (Windows; best effort)."""
    if sys.platform != "win32":
        return
    import ctypes

    user32 = ctypes.WinDLL("user32", use_last_error=True)
    result = ctypes.c_size_t(0)
    user32.SendMessageTimeoutW(_HWND_BROADCAST, _WM_FONTCHANGE, 0, 0, _SMTO_ABORTIFHUNG,
                               1000, ctypes.byref(result))
