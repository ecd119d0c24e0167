"""Atomic, idempotent writes that never leave the output folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from newsletter.errors import OutputError
from newsletter.output import MANIFEST, safe_target, write_outputs


def test_unchanged_files_keep_their_mtime(tmp_path: Path) -> None:
    write_outputs(tmp_path, {"a.xml": b"one", "sub/b.xml": b"two"})
    os.utime(tmp_path / "a.xml", ns=(1_000_000_000, 1_000_000_000))
    report = write_outputs(tmp_path, {"a.xml": b"one", "sub/b.xml": b"TWO"})
    assert report.unchanged == ["a.xml"] and report.written == ["sub/b.xml"]
    assert (tmp_path / "a.xml").stat().st_mtime_ns == 1_000_000_000
    assert (tmp_path / "sub/b.xml").read_bytes() == b"TWO"
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_files_no_longer_built_are_removed_but_foreign_files_are_kept(tmp_path: Path) -> None:
    write_outputs(tmp_path, {"tags/old/index.xml": b"x", "index.xml": b"y"})
    (tmp_path / "robots.txt").write_text("mine")
    report = write_outputs(tmp_path, {"index.xml": b"y"})
    assert report.removed == ["tags/old/index.xml"]
    assert not (tmp_path / "tags/old/index.xml").exists()
    assert (tmp_path / "robots.txt").read_text() == "mine"


def test_a_tampered_manifest_cannot_delete_outside(tmp_path: Path) -> None:
    out = tmp_path / "public"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    write_outputs(out, {"index.xml": b"y"})
    (out / MANIFEST).write_text("../victim.txt\n/etc/passwd\nindex.xml\n")
    write_outputs(out, {"index.xml": b"y"})
    assert victim.read_text() == "keep"


@pytest.mark.parametrize(
    "rel", ["../escape.xml", "a/../../escape.xml", "/etc/passwd", "a\\b.xml", "x\x00.xml", "", "."]
)
def test_unsafe_paths_are_refused(tmp_path: Path, rel: str) -> None:
    with pytest.raises(OutputError) as info:
        safe_target(tmp_path, rel)
    assert info.value.path == rel


def test_a_link_out_of_the_output_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "public"
    out.mkdir()
    (out / "tags").symlink_to(tmp_path)
    with pytest.raises(OutputError):
        write_outputs(out, {"tags/x/index.xml": b"x"})
    assert not (tmp_path / "x").exists()
