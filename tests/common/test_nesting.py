"""Flat keys to nested dictionaries."""

from common.nesting import nested


def test_nested_splits_keys_on_the_separator() -> None:
    flat = {"a.b": 1, "a.c": 2.5, "d": "x", "a.e.f": True}
    assert nested(flat, ".") == {"a": {"b": 1, "c": 2.5, "e": {"f": True}}, "d": "x"}


def test_nested_keeps_other_separators_inside_names() -> None:
    assert nested({"quantiles/p.05": 0.1}, "/") == {"quantiles": {"p.05": 0.1}}
