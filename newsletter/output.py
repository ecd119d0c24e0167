"""Write build outputs: atomically, only when the bytes changed, never outside the output folder.

Also the build state: which inputs made each output file and the stamp the file had when it was
written, so that the next build can skip feeds whose inputs did not change (issue 7).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ArticleError, OutputError

log = logging.getLogger(__name__)

MANIFEST = ".newsletter-manifest"
Stamp = tuple[int, int, int, int]  # inode, size, mtime_ns, ctime_ns


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


def write_changed(out_dir: Path, rel: str, data: bytes) -> bool:
    """Write out_dir/rel unless it already holds these bytes; True if it was written.

    Raises:
        OutputError: an unsafe path, or the file cannot be written.
    """
    target = safe_target(out_dir, rel)
    try:
        if target.read_bytes() == data:
            return False
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        pass
    try:
        write_atomic(target, data)
    except OSError as exc:
        raise OutputError(rel, f"cannot be written: {exc.strerror}") from exc
    return True


class OutputWriter:
    """Writes the outputs of one build as they are produced (so a big build need not hold every
    file in memory), then `finish()` removes what the last build wrote and this one did not, and
    updates the manifest. A file whose bytes are already on disk is not rewritten: it keeps its
    mtime, so HTTP ETag/Last-Modified stay valid."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.report = WriteReport()
        self._listed: set[str] = set()

    def write(self, rel: str, data: bytes) -> None:
        self.record(rel, write_changed(self.out_dir, rel, data))

    def record(self, rel: str, written: bool) -> None:
        """An output of this build that someone else (a worker) wrote or found unchanged."""
        self._listed.add(rel)
        (self.report.written if written else self.report.unchanged).append(rel)

    def keep(self, rel: str) -> None:
        """An output of this build that the caller knows is already on disk with the right
        bytes (see `BuildState`): kept, not read or written."""
        safe_target(self.out_dir, rel)
        self._listed.add(rel)
        self.report.unchanged.append(rel)

    def finish(self) -> WriteReport:
        manifest = self.out_dir / MANIFEST
        try:
            previous = manifest.read_text(encoding="utf-8").splitlines()
        except OSError:
            previous = []
        for rel in previous:
            if rel and rel not in self._listed:
                try:
                    stale = safe_target(self.out_dir, rel)
                except OutputError:
                    continue  # a tampered manifest must not delete anything outside out_dir
                if stale.is_file():
                    stale.unlink()
                    self.report.removed.append(rel)
        listing = "".join(f"{rel}\n" for rel in sorted(self._listed)).encode("utf-8")
        if not manifest.exists() or manifest.read_bytes() != listing:
            write_atomic(manifest, listing)
        for names in (self.report.written, self.report.unchanged, self.report.removed):
            names.sort()
        return self.report


def write_outputs(
    out_dir: Path, files: Mapping[str, bytes], unchanged: Iterable[str] = ()
) -> WriteReport:
    """Write every file whose bytes differ from what is on disk and remove files that an
    earlier build wrote but this one no longer produces (e.g. the feed of a tag that is gone).

    Args:
        unchanged: further outputs of this build that the caller knows are already on disk
            with the right bytes (see `BuildState`); they are kept, not read or written.
    """
    writer = OutputWriter(out_dir)
    kept = set(unchanged)
    for rel in sorted(kept.union(files)):
        if rel in files:
            writer.write(rel, files[rel])
        else:
            writer.keep(rel)
    return writer.finish()


def stamp(path: Path) -> Stamp | None:
    """What tells one version of a file from another without reading it; None if it is gone.

    The inode and ctime change whenever anything rewrites or replaces the file, even a tool that
    restores the mtime, so a matching stamp means the file is still the one we wrote or read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class OutputFiles(Mapping[str, bytes]):
    """The outputs of one build, by relative path: bytes rendered in this build, and files kept
    from an earlier build (read from the output folder only when asked for)."""

    def __init__(self, out_dir: Path, names: Iterable[str], rendered: Mapping[str, bytes]):
        self._out_dir = out_dir
        self._order = list(dict.fromkeys([*names, *rendered]))
        self._names = set(self._order)
        self._rendered = rendered

    def __getitem__(self, rel: str) -> bytes:
        data = self._rendered.get(rel)
        if data is not None:
            return data
        if rel not in self._names:
            raise KeyError(rel)
        return safe_target(self._out_dir, rel).read_bytes()

    def __contains__(self, rel: object) -> bool:
        return rel in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)


# --- the build state ---------------------------------------------------------------------------
_STATE_MAGIC = b"newsletter-state\n"


@dataclass
class BuildState:
    """What one indexed build produced, for the next build of the same output folder.

    outputs: per file (manifest included) the fingerprint of its inputs and its stamp after the
        build. A file whose fingerprint and stamp both match need not be rendered again.
    inputs: the scan signature of the content folder, or None if some file was too fresh to
        trust its stat (then the next build scans, even if the signature matches).
    window: [from, until) in epoch microseconds in which the published set does not change.
    """

    outputs: dict[str, tuple[bytes, Stamp]]
    inputs: bytes | None = None
    window: tuple[int, int] = (0, 0)
    articles: int = 0
    published: int = 0
    problems: list[ArticleError] = field(default_factory=list)

    def intact(self, out_dir: Path) -> bool:
        """True if every output is still exactly as this build left it."""
        return all(
            stamp(safe_target(out_dir, rel)) == recorded for rel, (_, recorded) in self.outputs.items()
        )


def load_state(path: Path, key: bytes) -> BuildState | None:
    """The state saved under this key, or None (missing, damaged, or for other settings/code)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(_STATE_MAGIC)
    digest, body = data[head : head + 32], data[head + 32 :]
    if data[:head] != _STATE_MAGIC or hashlib.sha256(key + body).digest() != digest:
        log.info("build state %s is damaged or for another build; not using it", path)
        return None
    try:
        state = pickle.loads(body)  # noqa: S301 - our own file, checksummed with the key
    except Exception as exc:
        log.warning("build state %s cannot be read (%s); not using it", path, exc)
        return None
    return state if isinstance(state, BuildState) else None


def save_state(path: Path, key: bytes, state: BuildState) -> None:
    body = pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
    data = _STATE_MAGIC + hashlib.sha256(key + body).digest() + body
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    except OSError as exc:  # without a state the next build only renders more
        log.warning("cannot write build state %s: %s", path, exc)


def forget_state(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove build state %s: %s", path, exc)
