"""The user's own mistakes (issue 10, items 12-15), through the real CLI."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import extractor, one_line


async def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    dataset = tmp_path / "invoices" / "order_month=2024-01" / "part-x.parquet"
    dataset.parent.mkdir(parents=True)
    dataset.write_bytes(b"data")
    (tmp_path / "notes.txt").write_text("ten years of notes")
    code, _, err = await extractor("demo", "--out", str(tmp_path), "--orders", "50")
    assert code == 2
    assert "is not empty and is not a demo's output" in one_line(err)
    assert (tmp_path / "notes.txt").read_text() == "ten years of notes"
    assert (
        tmp_path / "invoices" / "order_month=2024-01" / "part-x.parquet"
    ).read_bytes() == b"data"


async def test_demo_again_clears_only_what_a_demo_wrote(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code, _, err = await extractor("demo", "--out", str(out), "--orders", "50")
    assert code == 0, err
    (out / "mine.txt").write_text("kept")
    code, second, err = await extractor("demo", "--out", str(out), "--orders", "60")
    assert code == 0, err
    assert (out / "mine.txt").read_text() == "kept"
    assert len(list((out / "_runs").glob("*[0-9a-f].json"))) == 1  # the new demo's only
    assert "invoices      60 " in second
