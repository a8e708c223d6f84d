"""Reading a file a user names: existence checks and JSON that fail as a ``UserError`` (one line,
naming the file and what to do), never as an OSError, UnicodeDecodeError or RecursionError.

Stdlib only: the monitor sidecar (60 MiB budget) reads its ``--profile`` through here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow_adaptive.domain.errors import UserError


def is_file(path: str | Path) -> bool:
    """``Path.is_file``, but False for a name no file can have (too long, a NUL byte), where
    pathlib raises OSError (ENAMETOOLONG) instead."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: str | Path) -> bool:
    """``Path.is_dir``, False for a name no directory can have (see :func:`is_file`)."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def read_text(path: str | Path, where: str, error: type[UserError] = UserError) -> str:
    """The file's text as UTF-8; ``error`` naming ``where`` when it cannot be read or decoded."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not UTF-8 text (byte {exc.start}: {exc.reason}); is it the right file?") from None
    except OSError as exc:
        raise error(f"{where}: cannot read it ({exc.strerror or exc})") from None


def parse_json(text: str, where: str, error: type[UserError] = UserError) -> Any:
    """JSON ``text``; ``error`` naming ``where`` and the line when it is not JSON we can read."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply to read") from None
    except ValueError as exc:  # an integer of more than 4300 digits (CPython's limit)
        raise error(f"{where}: not JSON we can read ({str(exc)[:80]})") from None
