"""The one rule for outputs that exist, and the all-or-nothing directory writer (twinml._io)."""

from __future__ import annotations

import pytest

from twinml._io import atomic_directory, refuse_existing


def test_an_existing_output_is_refused_with_one_message_and_kept(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.txt").write_text("kept")
    want = f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it."
    with pytest.raises(FileExistsError) as err:
        with atomic_directory(out, overwrite=False) as tmp:
            (tmp / "new.txt").write_text("never placed")
    assert str(err.value) == want
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary directory left
    state = tmp_path / "state" / "manifest.json"
    state.parent.mkdir()
    state.write_text("{}")
    with pytest.raises(FileExistsError) as err:
        refuse_existing(None, tmp_path / "absent", state, overwrite=False, what="a twin state")
    assert str(err.value) == f"{state} exists (a twin state); pass overwrite=True (CLI: --overwrite) to replace it."
    refuse_existing(out, state, overwrite=True)  # asked to: no error


def test_overwrite_replaces_the_whole_directory_and_a_failure_leaves_it_as_it_was(tmp_path):
    out = tmp_path / "report"
    with atomic_directory(out, overwrite=False) as tmp:  # a new output needs no overwrite
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_directory(out, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("half-way")
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert [p.name for p in out.iterdir()] == ["b.txt"]  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
