"""A deeply nested body is refused before it is parsed, with the same words whatever the
interpreter's recursion limit is (CI once raised it inside the same process and 2,000 levels
parsed into a list), and the depth scan is linear on hostile text."""

from __future__ import annotations

import json
import sys

import pytest

from dispatcher.core.errors import MessageError
from dispatcher.core.message import MAX_DEPTH, _text_depth, decode


@pytest.mark.parametrize("limit", [1_000, 50_000])
def test_deep_json_is_refused_the_same_way_at_any_recursion_limit(limit: int) -> None:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        for body in ("[" * 2000 + "]" * 2000, '{"a":' * 500 + "1" + "}" * 500):
            with pytest.raises(MessageError, match=f"nested deeper than {MAX_DEPTH} levels"):
                decode(body)
    finally:
        sys.setrecursionlimit(old)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"schema": "x", "note": "[[[[{{{{" * 100, "escaped": '\\"[[[[' * 50, "list": [[1]]})
    assert _text_depth(text) == 3
    with pytest.raises(MessageError, match="schema"):
        decode(text)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("body", ['\\"' * 100_000, '"' + "a\\" * 120_000, '["\\"' * 50_000, "[" * 250_000])
def test_the_scan_is_linear_on_hostile_text(body: str) -> None:
    # a backtracking string pattern took minutes on the first body; this is one pass
    assert _text_depth(body) >= 0
