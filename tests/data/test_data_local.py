"""Local .txt / .jsonl / .parquet sources through HF `datasets` (offline), with options and filters."""
from __future__ import annotations

import json

import pytest

from simfed.data import DataError, source_documents


def test_txt_file_is_one_document_and_a_folder_many(tmp_path, cache):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("first line\nsecond line\n")
    (folder / "b.txt").write_text("another file\n")
    assert source_documents(str(folder / "a.txt")) == ["first line\nsecond line\n"]
    assert sorted(source_documents(str(folder))) == ["another file\n", "first line\nsecond line\n"]


def test_jsonl_with_text_field_filter_and_limit(tmp_path, cache):
    path = tmp_path / "news.jsonl"
    rows = [{"body": f"story {i}", "label": i % 4} for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(source_documents(f"{path}?text_field=body")) == 20
    assert source_documents(f"{path}?text_field=body&label=2") == [f"story {i}" for i in range(2, 20, 4)]
    assert source_documents(f"{path}?text_field=body&label=2&limit=2") == ["story 2", "story 6"]
    with pytest.raises(DataError, match="no column 'text'"):
        source_documents(f"{path}?text_field=text")


def test_only_string_column_is_the_text(tmp_path, cache):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps([{"content": "hello there", "id": 1}]))
    assert source_documents(str(path)) == ["hello there"]


def test_parquet(tmp_path, cache):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": ["alpha", "beta", ""], "topic": ["x", "y", "x"]}), path)
    assert source_documents(str(path)) == ["alpha", "beta"]  # empty documents are dropped
    assert source_documents(f"{path}?topic=y") == ["beta"]


def test_missing_path_is_a_data_error(tmp_path, cache):
    with pytest.raises(DataError, match="no such file or folder"):
        source_documents(str(tmp_path / "nope.txt"))


def test_filter_on_a_field_inside_a_struct_column(tmp_path, cache):
    """SlimPajama keeps its category in `meta`: `?meta.redpajama_set_name=RedPajamaGithub`."""
    path = tmp_path / "slim.jsonl"
    sets = ["RedPajamaGithub", "RedPajamaArXiv", "RedPajamaBook"]
    rows = [{"text": f"doc {i}", "meta": {"redpajama_set_name": sets[i % 3]}} for i in range(9)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert source_documents(f"{path}?meta.redpajama_set_name=RedPajamaArXiv") == ["doc 1", "doc 4", "doc 7"]
    assert source_documents(f"{path}?meta.missing=x") == []
    with pytest.raises(DataError, match="cannot filter on 'nometa.x'"):
        source_documents(f"{path}?nometa.x=1")
