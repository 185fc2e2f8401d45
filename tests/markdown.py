"""Posted bodies read the way GitHub renders them: CommonMark with GFM tables (markdown-it-py),
raw HTML allowed as GitHub allows it. Tests assert on what a reader sees, not on our escaping."""
from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.token import Token

_MD = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def html(body: str) -> str:
    return _MD.render(body)


def _inline(body: str) -> list[Token]:
    return [child for token in _MD.parse(body) if token.type == "inline" for child in token.children or ()]


def links(body: str) -> dict[str, str]:
    """label (as read: the invisible zero-width spaces dropped) -> href of every link in `body`."""
    found: dict[str, str] = {}
    href: str | None = None
    label = ""
    for token in _inline(body):
        if token.type == "link_open":
            href, label = str(token.attrs.get("href")), ""
        elif token.type == "link_close" and href is not None:
            found[label.replace("\u200b", "")] = href
            href = None
        elif href is not None and token.type in ("text", "code_inline"):
            label += token.content
    return found


def text(body: str) -> str:
    """The text a reader sees (markup dropped, escapes resolved), one inline run per line."""
    return "\n".join("".join(t.content for t in (token.children or ()) if t.type in ("text", "code_inline"))
                     for token in _MD.parse(body) if token.type == "inline")


def cells(body: str, heading: str) -> list[list[str]]:
    """The rows (the header first) of the first table after the heading `heading`, each cell as read."""
    tokens = _MD.parse(body)
    start = next(i for i, t in enumerate(tokens) if t.type == "inline" and t.content == heading
                 and tokens[i - 1].type == "heading_open")
    rows: list[list[str]] = []
    in_table = False
    for token in tokens[start:]:
        if token.type == "table_open":
            in_table = True
        elif token.type == "table_close" or (token.type == "heading_open" and rows):
            break
        elif in_table and token.type == "tr_open":
            rows.append([])
        elif in_table and token.type == "inline":
            rows[-1].append("".join(t.content for t in token.children or () if t.type in ("text", "code_inline")))
    return rows
