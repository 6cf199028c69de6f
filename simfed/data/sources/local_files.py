"""Hub datasets (`hf:NAME`) and local .txt/.json/.jsonl/.parquet files, loaded through HF `datasets`."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..spec import LOCAL_SUFFIXES, DataError, SourceRef

_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def local_files(ref: SourceRef) -> list[Path]:
    """The data files a local source names (a file, or a folder searched recursively), sorted."""
    path = Path(ref.name).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES)
    else:
        raise DataError(f"source '{ref.name}': no such file or folder")
    if not files:
        raise DataError(f"source '{ref.name}': no {'/'.join(LOCAL_SUFFIXES)} files in that folder")
    kinds = {_BUILDERS.get(p.suffix) for p in files}
    if None in kinds or len(kinds) > 1:
        raise DataError(f"source '{ref.name}': mixes or has unsupported file types "
                        f"({', '.join(sorted({p.suffix for p in files}))}); use one of {'/'.join(LOCAL_SUFFIXES)}")
    return files


def local_fingerprint(ref: SourceRef) -> str:
    """sha256 over the files' names and bytes and the source's options: any edit changes it."""
    h = hashlib.sha256(repr((ref.split, ref.text_field, ref.limit, ref.filters)).encode())
    for path in local_files(ref):
        h.update(str(path.resolve()).encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _load(ref: SourceRef, hf_cache: Path):
    """The `datasets.Dataset` of the source's split, before filters."""
    import datasets  # heavy import: only when a hub or local source is used

    if ref.kind == "local":
        files = local_files(ref)
        builder = _BUILDERS[files[0].suffix]
        extra = {"sample_by": "document"} if builder == "text" else {}  # one .txt file = one document
        # keyed by content so that an edited file is re-read rather than served from datasets' cache
        cache = hf_cache / f"local-{local_fingerprint(ref)[:16]}"
        dsd = datasets.load_dataset(builder, data_files=[str(p) for p in files], cache_dir=str(cache), **extra)
        split = "train"
    else:
        try:
            dsd = datasets.load_dataset(ref.name, ref.config, cache_dir=str(hf_cache))
        except Exception as exc:  # offline, unknown name, missing config: one line for the user
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise DataError(f"source 'hf:{ref.name}' could not be loaded ({first}); "
                            "is it in the datasets cache, or is the hub reachable?") from exc
        split = ref.split
    if split not in dsd:
        raise DataError(f"source '{ref.name}' has no split '{split}'; it has {', '.join(dsd)}")
    return dsd[split]


def _text_field(ds, ref: SourceRef) -> str:
    if ref.text_field:
        if ref.text_field not in ds.column_names:
            raise DataError(f"source '{ref.name}': no column '{ref.text_field}'; columns: {', '.join(ds.column_names)}")
        return ref.text_field
    if "text" in ds.column_names:
        return "text"
    strings = [c for c, f in ds.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
    if len(strings) == 1:
        return strings[0]
    raise DataError(f"source '{ref.name}': say which column holds the text with ?text_field=NAME; "
                    f"columns: {', '.join(ds.column_names)}")


def _nested_filter(ds, ref: SourceRef, column: str, value: str):
    """`meta.redpajama_set_name=RedPajamaGithub`: equality on a field inside a struct column
    (SlimPajama keeps its category in `meta`)."""
    head, *path = column.split(".")

    def keep(col):
        out = []
        for v in col:
            for key in path:
                v = v.get(key) if isinstance(v, dict) else None
            out.append(v is not None and str(v) == value)
        return out

    return ds.filter(keep, batched=True, input_columns=[head])


def _apply_filters(ds, ref: SourceRef):
    for column, value in ref.filters:
        if column not in ds.column_names and column.split(".")[0] in ds.column_names and "." in column:
            ds = _nested_filter(ds, ref, column, value)
            continue
        if column not in ds.column_names:
            raise DataError(f"source '{ref.name}': cannot filter on '{column}'; columns: {', '.join(ds.column_names)}")
        feature = ds.features[column]
        wanted = value
        if hasattr(feature, "str2int") and not value.lstrip("-").isdigit():
            wanted = str(feature.str2int(value))  # a ClassLabel filtered by its name: label=Sports
        ds = ds.filter(lambda col, w=wanted: [str(v) == w for v in col], batched=True, input_columns=[column])
    return ds


def _version(ref: SourceRef, ds) -> str:
    if ref.kind == "local":
        return local_fingerprint(ref)
    options = (ref.name, ref.config, ref.split, ref.text_field, ref.limit, ref.filters)
    return hashlib.sha256(repr((ds._fingerprint, options)).encode()).hexdigest()


def load_dataset_documents(ref: SourceRef, hf_cache: Path) -> tuple[list[str], str]:
    """(documents in dataset order, version) of a hub or local source after filters and limit."""
    ds = _load(ref, hf_cache)
    version = _version(ref, ds)
    field = _text_field(ds, ref)
    ds = _apply_filters(ds, ref)
    if ref.limit is not None:
        ds = ds.select(range(min(ref.limit, len(ds))))
    docs = [t for t in ds[field] if isinstance(t, str) and t.strip()]
    return docs, version


def source_version(ref: SourceRef, hf_cache: Path) -> str:
    """The version of a hub or local source, without filtering or reading its documents."""
    if ref.kind == "local":
        return local_fingerprint(ref)
    return _version(ref, _load(ref, hf_cache))
