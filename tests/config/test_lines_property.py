"""Property: every key and list item of any YAML document gets its line, in document order."""
from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from simfed.config import read_yaml

keys = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans(), st.none(), st.text(max_size=12))
documents = st.dictionaries(
    keys,
    st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(keys, inner, max_size=3)),
                 max_leaves=12),
    min_size=1, max_size=5)


def paths(node, prefix=()):
    """Every key path in document order."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from paths(value, prefix + (key,))


@settings(max_examples=100, deadline=None)
@given(documents, st.booleans())
def test_every_path_has_its_line(doc, flow):
    text = yaml.safe_dump(doc, default_flow_style=None if flow else False, sort_keys=False)
    data, lines = read_yaml(text, "p.yaml")
    assert data == doc
    order = list(paths(doc))
    assert set(order) <= set(lines)
    numbers = [lines[p] for p in order]
    assert numbers == sorted(numbers) and all(1 <= n <= text.count("\n") + 1 for n in numbers)
    for path in order:
        if isinstance(path[-1], str):
            assert path[-1] in text.splitlines()[lines[path] - 1]
