"""Atomic, idempotent writes that never leave the output folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from newsletter.errors import OutputError
from newsletter.output import (
    MANIFEST,
    BuildState,
    OutputFiles,
    load_state,
    safe_target,
    save_state,
    stamp,
    write_atomic,
    write_outputs,
)


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


# --- files kept from an earlier build, and the build state ---------------------------------------
def test_unchanged_files_are_kept_without_reading_and_stay_listed(tmp_path: Path) -> None:
    write_outputs(tmp_path, {"a.xml": b"one", "b.xml": b"two", "old.xml": b"x"})
    (tmp_path / "b.xml").write_bytes(b"not what the caller thinks")  # trusted, so left alone
    report = write_outputs(tmp_path, {"a.xml": b"ONE"}, unchanged=["b.xml"])
    assert (tmp_path / "b.xml").read_bytes() == b"not what the caller thinks"
    assert report.written == ["a.xml"] and report.unchanged == ["b.xml"]
    assert report.removed == ["old.xml"]
    assert (tmp_path / MANIFEST).read_text() == "a.xml\nb.xml\n"


def test_output_files_reads_kept_files_on_demand(tmp_path: Path) -> None:
    write_outputs(tmp_path, {"k.xml": b"kept", "r.xml": b"old"})
    files = OutputFiles(tmp_path, ["k.xml", "r.xml"], {"r.xml": b"new"})
    assert list(files) == ["k.xml", "r.xml"] and len(files) == 2
    assert files["k.xml"] == b"kept" and files["r.xml"] == b"new"
    assert "k.xml" in files and "x.xml" not in files
    with pytest.raises(KeyError):
        files["x.xml"]
    assert files == {"k.xml": b"kept", "r.xml": b"new"}


def test_stamp_sees_a_rewrite_even_with_the_same_bytes_and_mtime(tmp_path: Path) -> None:
    target = tmp_path / "a.xml"
    write_atomic(target, b"same")
    before = stamp(target)
    mtime = target.stat().st_mtime_ns
    write_atomic(target, b"same")
    os.utime(target, ns=(mtime, mtime))
    assert stamp(target) != before
    assert stamp(tmp_path / "gone.xml") is None


def test_build_state_round_trip_and_damage(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_outputs(out, {"a.xml": b"1"})
    state = BuildState(outputs={"a.xml": (b"f" * 16, stamp(out / "a.xml"))}, inputs=b"sig",
                       window=(1, 2), articles=3, published=2)
    path = tmp_path / "cache" / "build.state"
    save_state(path, b"key", state)
    loaded = load_state(path, b"key")
    assert loaded == state and loaded is not None and loaded.intact(out)
    assert load_state(path, b"other key") is None
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    assert load_state(path, b"key") is None
    (out / "a.xml").write_bytes(b"2")
    assert not state.intact(out)
    (out / "a.xml").unlink()
    assert not state.intact(out)
