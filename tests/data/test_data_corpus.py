"""build_builtin_corpus with stand-in builders (no apt, no network) and the real corpus (slow)."""
from __future__ import annotations

import time

import pytest

import simfed.data.sources as sources
from simfed.data import ByteTokenizer, DataError, DataSpec, build_builtin_corpus, build_federation, describe_corpus
from simfed.data.corpora import source_documents
from simfed.data.sources import Built, Recipe, SourceUnavailable
from simfed.data.sources.language import language_votes


def _fake_recipes(monkeypatch, calls):
    def ok(ctx):
        calls.append("code")
        return Built(["def f():\n    return 1\n", "x = 2\n"], origin="stand-in")

    def broken(ctx):
        calls.append("docs")
        raise SourceUnavailable("python3.11-doc: apt-get not found")

    def crashing(ctx):
        raise RuntimeError("builder bug")

    monkeypatch.setattr(sources, "recipes", lambda: {
        "code": Recipe((), ok), "docs": Recipe((), broken), "faq": Recipe((), crashing)})


def test_build_reports_failures_and_is_idempotent(cache, monkeypatch):
    calls: list[str] = []
    _fake_recipes(monkeypatch, calls)
    logged: list[str] = []
    report = build_builtin_corpus(cache, ["code", "docs", "faq"], console_log=logged.append)
    assert [(r.name, r.status) for r in report.results] == [("code", "built"), ("docs", "failed"), ("faq", "failed")]
    assert "apt-get not found" in report.results[1].note and "builder bug" in report.results[2].note
    assert not report.ok and any("docs FAILED" in line for line in logged)
    assert "code" in str(report)

    again = build_builtin_corpus(cache, ["code"], console_log=logged.append)
    assert [(r.name, r.status, r.docs) for r in again.results] == [("code", "cached", 2)]
    assert calls == ["code", "docs"]  # nothing rebuilt

    rows = {name: (docs, chars, status) for name, docs, chars, status in describe_corpus(cache)}
    assert rows["code"] == (2, 28, "ok")
    assert rows["docs"][2].startswith("failed: python3.11-doc")
    assert rows["shakespeare"][2] == "not built"
    assert source_documents("code", cache) == ["def f():\n    return 1\n", "x = 2\n"]


def test_a_source_that_cannot_be_built_is_a_data_error(cache, monkeypatch):
    _fake_recipes(monkeypatch, [])
    spec = DataSpec(users=["docs"], cache_dir=cache)
    with pytest.raises(DataError, match="built-in source 'docs' could not be built"):
        build_federation(spec, ByteTokenizer(), 1, seed=0)


def test_unknown_builtin_name(cache):
    with pytest.raises(DataError, match="unknown built-in"):
        build_builtin_corpus(cache, ["klingon"])


@pytest.fixture(scope="module")
def real_corpus():
    """The real built-in corpus in the user's cache (built on first use: about a minute)."""
    report = build_builtin_corpus(console_log=lambda _msg: None)
    return report


@pytest.mark.slow
@pytest.mark.parametrize("name,min_chars", [("de", 3e6), ("fr", 1e6), ("it", 2e5), ("nl", 2e5),
                                            ("code", 2e6), ("docs", 1e6), ("shakespeare", 3e6)])
def test_real_corpus_source(real_corpus, name, min_chars):
    result = {r.name: r for r in real_corpus.results}[name]
    if result.status == "failed":
        pytest.skip(f"built-in source '{name}' cannot be built here: {result.note}")
    assert result.chars >= min_chars


@pytest.mark.slow
def test_real_corpus_second_build_is_instant(real_corpus):
    t0 = time.perf_counter()
    again = build_builtin_corpus(console_log=lambda _msg: None)
    assert time.perf_counter() - t0 < 2.0
    assert all(r.status == "cached" for r in again.results if r.status != "failed")


@pytest.mark.slow
def test_real_language_users_federate(real_corpus):
    built = {r.name for r in real_corpus.results if r.status != "failed"}
    langs = [lang for lang in ("de", "fr", "it", "nl") if lang in built]
    if not langs:
        pytest.skip("no man-page language source could be built here (apt-get or groff missing)")
    spec = DataSpec(users=langs, train_tokens=20_000, val_tokens=2_000, test_tokens=2_000)
    fed = build_federation(spec, ByteTokenizer(), n_clients=len(langs), seed=0)
    tok = ByteTokenizer()
    for lang, user in zip(langs, fed):
        assert (len(user.train), len(user.val), len(user.test)) == (20_000, 2_000, 2_000)
        text = tok.decode(user.train)
        assert language_votes(text)[lang] == max(language_votes(text).values())


def test_docs_falls_back_to_docstrings_and_says_so(tmp_path, monkeypatch):
    from simfed.data.sources import BuildContext, python_docs

    monkeypatch.setattr(python_docs, "build_docstrings", lambda ctx: Built(["a docstring"], origin="docstrings"))
    ctx = BuildContext(tmp_path, print, package_errors={"python3.11-doc": "apt-get not found"})
    monkeypatch.setattr(python_docs, "python_doc_package", lambda: "python3.11-doc")
    built = python_docs.build_docs(ctx)
    assert built.documents == ["a docstring"]
    assert built.fallback == "apt-get not found; used stdlib docstrings instead"


def test_missing_groff_and_apt_are_reported(tmp_path, monkeypatch):
    from simfed.data.sources import BuildContext, debian, manpages

    monkeypatch.setattr(manpages.shutil, "which", lambda tool: None)
    with pytest.raises(SourceUnavailable, match="groff is not installed"):
        manpages.build_language(BuildContext(tmp_path, print), "de")
    monkeypatch.setattr(debian.shutil, "which", lambda tool: None)
    roots, failed = debian.fetch_packages(["manpages-de"], tmp_path / "apt", print)
    assert roots == {} and "apt-get and dpkg-deb not found" in failed["manpages-de"]


def test_two_users_on_one_source_share_the_error(cache):
    spec = DataSpec(users=["toy:a", {"source": "toy:b", "val_source": "toy:a"}], train_tokens=50_000,
                    val_tokens=20_000, test_tokens=1_000, cache_dir=cache)
    with pytest.raises(DataError, match=r"users 'toy:a', 'toy:b' ask 91000 train\+val\+test tokens but "
                                        r"source 'toy:a' has \d+ \(bytes-v1 tokens\); lower data.users\[0\]"):
        build_federation(spec, ByteTokenizer(), 2, seed=0)
