"""Safe YAML loading for sweep files: size limit, alias-bomb guard, duplicate keys, line/column.

PyYAML's ``safe_load`` already refuses arbitrary Python objects. On top of it we refuse:

* files larger than ``max_bytes`` (a sweep file is a few KiB; the SQS body limit is 256 KiB),
* more than ``max_aliases`` alias references (``*ref``) — the "billion laughs" defence,
* documents that expand to more than ``max_nodes`` nodes,
* duplicate mapping keys (PyYAML silently keeps the last one — a classic sweep-file typo),
* more than one document.

Every error is a :class:`SpecError` naming the line and column.
"""

from __future__ import annotations

from typing import Any

import yaml

from dispatcher.core.errors import SpecError

MAX_SPEC_BYTES = 192 * 1024
MAX_ALIASES = 64
MAX_NODES = 100_000


def _limited_loader(max_aliases: int, max_nodes: int) -> type:
    class _Loader(yaml.SafeLoader):
        aliases_seen = 0
        nodes_seen = 0

        def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D401 - PyYAML hook
            if self.check_event(yaml.AliasEvent):
                self.aliases_seen += 1
                if self.aliases_seen > max_aliases:
                    # types-PyYAML leaves Parser.peek_event unannotated (it returns the yaml.Event).
                    mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                    raise SpecError(
                        f"line {mark.line + 1}, column {mark.column + 1}: more than {max_aliases} YAML aliases "
                        "(*ref) — sweep files don't need alias expansion; write the values out"
                    )
            node = super().compose_node(parent, index)
            self.nodes_seen += 1
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (list, dict)):
                    mark = key_node.start_mark
                    raise SpecError(
                        f"line {mark.line + 1}, column {mark.column + 1}: a mapping key must be a plain value, "
                        f"not {type(key).__name__}"
                    )
                if key in seen:
                    mark = key_node.start_mark
                    raise SpecError(
                        f"line {mark.line + 1}, column {mark.column + 1}: duplicate key {key!r} "
                        f"(first at line {seen[key].line + 1}) — keep only one"
                    )
                seen[key] = key_node.start_mark
            return super().construct_mapping(node, deep=deep)

    return _Loader


def _count_expanded(value: Any, limit: int) -> None:
    """Walk the loaded object; aliases share objects, so count each visit (the expanded size)."""
    stack = [value]
    count = 0
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            raise SpecError(
                f"the document expands to more than {limit} values — sweep files are small; "
                "check for recursive or repeated aliases"
            )
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def load_yaml(
    text: str | bytes,
    *,
    source: str = "sweep file",
    max_bytes: int = MAX_SPEC_BYTES,
    max_aliases: int = MAX_ALIASES,
    max_nodes: int = MAX_NODES,
) -> Any:
    """Parse one YAML document safely. Raises :class:`SpecError` with line/column on any problem."""
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    if len(raw) > max_bytes:
        raise SpecError(
            f"file is {len(raw) // 1024} KiB, the limit is {max_bytes // 1024} KiB — sweep files list parameter "
            "ranges, not data; use min/max or fewer values",
            source=source,
        )
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"byte {exc.start}: not valid UTF-8 — save the file as UTF-8", source=source) from exc
    try:
        # The reader checks every character when the loader is built: inside the try, so a NUL or
        # another control character is a SpecError with its position (it used to escape as an
        # unexpected yaml.reader.ReaderError: "error: unexpected ReaderError" in the producer).
        loader = _limited_loader(max_aliases, max_nodes)(decoded)
    except yaml.reader.ReaderError as exc:
        line = decoded.count("\n", 0, exc.position) + 1
        column = exc.position - (decoded.rfind("\n", 0, exc.position) + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
        raise SpecError(
            f"line {line}, column {column}: character #x{code:04X} is not allowed in YAML — remove it "
            "(or write it as an escape such as \"\\x00\" inside double quotes)",
            source=source,
        ) from exc
    try:
        if not loader.check_node():
            raise SpecError("the file is empty — start from examples/sweep.yaml", source=source)
        node = loader.get_node()
        if loader.check_node():
            mark = loader.peek_event().start_mark
            raise SpecError(
                f"line {mark.line + 1}, column {mark.column + 1}: a second YAML document (---) — "
                "one sweep per file",
                source=source,
            )
        value = loader.construct_document(node)
    except SpecError as exc:
        if exc.source is None:
            raise SpecError(exc.problems, source=source) from exc
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        opened = ""
        if exc.context_mark is not None and exc.problem_mark is not None and exc.context_mark.line != exc.problem_mark.line:
            opened = f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        hint = "fix the YAML syntax there"
        bad_line = decoded.splitlines()[mark.line] if mark and mark.line < len(decoded.splitlines()) else ""
        if "${" in bad_line:
            hint = "quote W&B macros ('${args}') or write the command as a block list (- ${args})"
        raise SpecError(f"{where}YAML syntax error: {problem}{opened} — {hint}", source=source) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML error: {exc} — fix the YAML syntax", source=source) from exc
    except RecursionError as exc:
        raise SpecError("the document nests too deeply — flatten it", source=source) from exc
    finally:
        loader.dispose()
    _count_expanded(value, max_nodes)
    return value
