"""A small Markdown-to-HTML converter for the subset the report and the boilerplate use.

Supported: ``#``-``####`` headings, paragraphs, ``-``/``*`` bullet lists, ``1.`` numbered lists,
``**bold**``, ``*italic*``, ```code```, ``[text](url)`` links. Everything else is escaped text.
No dependency, no raw HTML pass-through (the input is escaped first).
"""

from __future__ import annotations

import html
import re

__all__ = ["inline_markdown", "markdown_to_html"]

_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])")
_CODE = re.compile(r"`([^`]+)`")
_HEADING = re.compile(r"^(#{1,4})\s+(.*)$")
_BULLET = re.compile(r"^\s*[-*]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*(\d+)\.\s+(.*)$")


def inline_markdown(text: str) -> str:
    """Escape ``text`` and render its inline Markdown (links, bold, italic, code)."""
    out = html.escape(text, quote=False)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _LINK.sub(lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    out = _ITALIC.sub(r"<em>\1</em>", out)
    return out


def markdown_to_html(text: str, heading_offset: int = 0) -> str:
    """Convert Markdown ``text`` to an HTML fragment.

    ``heading_offset`` shifts heading levels (``## x`` with offset 1 becomes ``<h3>``).
    """
    blocks: list[str] = []
    para: list[str] = []
    list_tag: str | None = None
    items: list[str] = []
    start = 1

    def flush_para() -> None:
        if para:
            blocks.append(f"<p>{inline_markdown(' '.join(para))}</p>")
            para.clear()

    def flush_list() -> None:
        nonlocal list_tag
        if list_tag:
            attr = f' start="{start}"' if list_tag == "ol" and start != 1 else ""
            body = "".join(f"<li>{inline_markdown(i)}</li>" for i in items)
            blocks.append(f"<{list_tag}{attr}>{body}</{list_tag}>")
            items.clear()
            list_tag = None

    for line in text.splitlines():
        if not line.strip():
            flush_para()
            flush_list()
            continue
        h = _HEADING.match(line)
        b = _BULLET.match(line)
        n = _NUMBERED.match(line)
        if h:
            flush_para()
            flush_list()
            level = min(len(h.group(1)) + heading_offset, 6)
            blocks.append(f"<h{level}>{inline_markdown(h.group(2))}</h{level}>")
        elif b or n:
            flush_para()
            tag = "ul" if b else "ol"
            if list_tag != tag:
                flush_list()
                list_tag = tag
                start = int(n.group(1)) if n else 1
            items.append(b.group(1) if b else n.group(2))
        elif list_tag and line.startswith("  "):
            items[-1] += " " + line.strip()
        else:
            flush_list()
            para.append(line.strip())
    flush_para()
    flush_list()
    return "\n".join(blocks)
