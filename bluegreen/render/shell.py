"""Shell quoting and small shell idioms every remote command uses (pure)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:

    pass



def sh(*args: str | int | os.PathLike[str]) -> str:
    """A shell command line with every argument quoted."""
    return " ".join(shlex.quote(str(a)) for a in args)


def env_prefix(env: Mapping[str, str] | None) -> str:
    if not env:
        return ""
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " "


def atomic_write_command(path: str, mode: int = 0o644) -> str:
    """Shell writing stdin to `path` through a temporary file and a rename."""
    p = shlex.quote(path)
    return (f"p={p}; mkdir -p -- \"$(dirname -- \"$p\")\" && t=$(mktemp -- \"$p.XXXXXXXX\") && "
            f"{{ cat > \"$t\" && chmod {mode:o} -- \"$t\" && mv -f -- \"$t\" \"$p\" "
            f"|| {{ rm -f -- \"$t\"; exit 1; }}; }}")


def read_file_command(path: str) -> str:
    """Shell printing `path`; exit 3 when it does not exist."""
    return f"p={shlex.quote(path)}; [ -e \"$p\" ] || exit 3; cat -- \"$p\""
