"""Backups that restore: a base backup, continuous WAL archiving, restore to a point in time."""

from __future__ import annotations

import shlex
from pathlib import Path


def archive_command(archive_dir: Path) -> str:
    """PostgreSQL's ``archive_command`` that copies each finished WAL segment into
    ``archive_dir``: never over a file already there (a segment archived twice
    must not be replaced by another's bytes), and whole files only (copied
    under a temporary name, then renamed)."""
    target = shlex.quote(str(Path(archive_dir).resolve()))
    return f"test ! -f {target}/%f && cp %p {target}/%f.part && mv {target}/%f.part {target}/%f"
