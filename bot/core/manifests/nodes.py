"""YAML composed into nodes with marks, only the documents that can match, and walks over them."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import yaml
from yaml.constructor import BaseConstructor
from yaml.resolver import BaseResolver

from bot.core.manifests.model import _DOCUMENT_START, BREAKS, ManifestError, _Document
from bot.core.yq import Path

# --- composing ------------------------------------------------------------------------------


def _compose(chunk: str, offset: int, text: str, file: str) -> list[yaml.Node]:
    try:
        return list(yaml.compose_all(chunk, Loader=_loader(chunk)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = text.count("\n", 0, offset + mark.index) + 1 if mark else None
        where = f" at line {line}" if line else ""
        raise ManifestError(f"{file} is not valid YAML{where} ({exc.problem or exc.context}): "
                            "fix the file in the config repository") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{file} is not valid YAML ({exc}): fix the file in the config repository") from None


class _Untagged(BaseResolver):
    """Every node gets its kind's default tag: the bot reads nodes' values and marks, never their
    tags, and PyYAML's implicit-tag regexps are a third of the composing time."""

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode:
            return str(self.DEFAULT_SCALAR_TAG)
        return str(self.DEFAULT_SEQUENCE_TAG if kind is yaml.SequenceNode else self.DEFAULT_MAPPING_TAG)


_FAST: Any = None  # without libyaml in PyYAML, the pure-Python loader does it all, slower
if yaml.__with_libyaml__:
    from yaml.cyaml import CParser  # type: ignore[attr-defined]

    class _FastComposer(CParser, BaseConstructor, _Untagged):
        """libyaml's parser and composer: the same marks (character offsets), ~10x faster."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            BaseConstructor.__init__(self)
            _Untagged.__init__(self)

    _FAST = _FastComposer


def _loader(chunk: str) -> Any:
    """libyaml when PyYAML was built with it; the pure-Python loader for a BOM (libyaml does not
    count its character in marks) or without libyaml."""
    return _FAST if _FAST is not None and not chunk.startswith("\ufeff") else yaml.SafeLoader


def _chunks(text: str) -> list[int]:
    """Start offsets of the stream's pieces: what precedes the first `---`, then one per `---`."""
    if text.startswith("\ufeff") or any(_at_line_start(text, i) for i in _indices(text, "%")):
        return [0]  # a BOM or a directive: compose the stream whole
    starts = [m.start() for m in _DOCUMENT_START.finditer(text) if _at_line_start(text, m.start())]
    return starts if starts[:1] == [0] else [0, *starts]


def _at_line_start(text: str, i: int) -> bool:
    return i == 0 or text[i - 1] in BREAKS


def _indices(text: str, needle: str) -> list[int]:
    found, i = [], text.find(needle)
    while i >= 0:
        found.append(i)
        i = text.find(needle, i + 1)
    return found


def _documents(text: str, may_match: Callable[[str], bool], file: str,
               only: frozenset[int] | None = None) -> tuple[list[_Document], int]:
    """The documents that may match (and, given `only`, have one of those indexes), composed, and
    how many documents the stream holds."""
    starts = _chunks(text)
    if len(starts) == 1:
        roots = _compose(text, 0, text, file)
        return [_Document(i, 0, root) for i, root in enumerate(roots) if only is None or i in only], len(roots)
    documents: list[_Document] = []
    index = 0
    for a, b in zip(starts, [*starts[1:], len(text)]):
        chunk = text[a:b]
        if not chunk.startswith("---") and _only_comments(chunk):
            continue  # before the first `---`: a leading comment, not a document
        if not may_match(chunk) or (only is not None and index not in only):
            index += 1
            continue
        for root in _compose(chunk, a, text, file):
            documents.append(_Document(index, a, root))
            index += 1
    return documents, index


def _only_comments(chunk: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in chunk.split("\n"))


def _contains_all(words: Iterable[str]) -> Callable[[str], bool]:
    """Can a chunk spell all `words`? Only when it has them literally or has an escape (\\)."""
    literal = [w for w in words if w and not any(c.isspace() or c in "'\"\\#" for c in w)]
    return lambda chunk: "\\" in chunk or all(w in chunk for w in literal)


def _get(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(key, int) and isinstance(node, yaml.SequenceNode):
        items = node.value
        return items[key] if -len(items) <= key < len(items) else None
    if isinstance(key, str) and isinstance(node, yaml.MappingNode):
        values = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]
        if len(values) > 1:
            raise ManifestError(f"key `{key}` appears {len(values)} times in one mapping: remove the duplicates")
        return values[0] if values else None
    return None


def _walk(node: yaml.Node | None, path: Path) -> tuple[yaml.Node | None, int]:
    """The node at `path` (or None) and how many segments of it exist."""
    for depth, key in enumerate(path):
        child = _get(node, key)
        if child is None:
            return None, depth
        node = child
    return node, len(path)


def _flow_along(node: yaml.Node | None, path: Path) -> bool:
    """Does `path` pass through a flow collection?"""
    for key in path:
        if isinstance(node, yaml.CollectionNode) and node.flow_style:
            return True
        node = _get(node, key)
    return False


def _scalar(node: yaml.Node | None, key: str) -> str | None:
    value = _get(node, key)
    return value.value if isinstance(value, yaml.ScalarNode) else None


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _where(document: _Document, node: yaml.Node, text: str, file: str) -> str:
    return f"{file} (document {document.index + 1}, line {_line(text, document.offset + node.start_mark.index)})"
