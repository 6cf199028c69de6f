"""Federated corpora: users, token streams and their train/val/test splits (numpy only)."""
from .corpora import (
    BuildReport,
    SourceResult,
    build_builtin_corpus,
    default_cache_dir,
    describe_corpus,
    source_documents,
)
from .federated import UserData, build_federation, fixed_windows, sample_windows
from .spec import BUILTIN_SOURCES, DataError, DataSpec, UserSpec, parse_source
from .tokenized import ByteTokenizer, TokenStream, load_tokens
from .toy import toy_corpus_two_domains

__all__ = [
    "BUILTIN_SOURCES", "BuildReport", "ByteTokenizer", "DataError", "DataSpec", "SourceResult",
    "TokenStream", "UserData", "UserSpec", "build_builtin_corpus", "build_federation",
    "default_cache_dir", "describe_corpus", "fixed_windows", "load_tokens", "parse_source",
    "sample_windows", "source_documents", "toy_corpus_two_domains",
]
