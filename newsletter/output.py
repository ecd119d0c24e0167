"""Write build outputs: atomically, only when the bytes changed, never outside the output folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OutputError

MANIFEST = ".newsletter-manifest"


@dataclass
class WriteReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def safe_target(out_dir: Path, relpath: str) -> Path:
    """The file for relpath inside out_dir; refuses anything that would land outside it."""
    if not relpath or "\x00" in relpath or "\\" in relpath or relpath.startswith("/"):
        raise OutputError(relpath, "not a safe relative output path")
    root = out_dir.resolve()
    target = (root / relpath).resolve()
    if not target.is_relative_to(root) or target == root:
        raise OutputError(relpath, f"would be written outside {root}")
    return target


def write_atomic(target: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_outputs(out_dir: Path, files: Mapping[str, bytes]) -> WriteReport:
    """Write every file whose bytes differ from what is on disk (an unchanged file keeps its
    mtime, so HTTP ETag/Last-Modified stay valid), and remove files that an earlier build wrote
    but this one no longer produces (e.g. the feed of a tag that is gone)."""
    report = WriteReport()
    targets = {rel: safe_target(out_dir, rel) for rel in sorted(files)}
    for rel, target in targets.items():
        data = files[rel]
        try:
            if target.read_bytes() == data:
                report.unchanged.append(rel)
                continue
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            pass
        try:
            write_atomic(target, data)
        except OSError as exc:
            raise OutputError(rel, f"cannot be written: {exc.strerror}") from exc
        report.written.append(rel)
    manifest = out_dir / MANIFEST
    try:
        previous = manifest.read_text(encoding="utf-8").splitlines()
    except OSError:
        previous = []
    for rel in previous:
        if rel and rel not in files:
            try:
                stale = safe_target(out_dir, rel)
            except OutputError:
                continue  # a tampered manifest must not delete anything outside out_dir
            if stale.is_file():
                stale.unlink()
                report.removed.append(rel)
    listing = "".join(f"{rel}\n" for rel in sorted(files)).encode("utf-8")
    if not manifest.exists() or manifest.read_bytes() != listing:
        write_atomic(manifest, listing)
    return report
