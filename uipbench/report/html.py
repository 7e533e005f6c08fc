"""The HTML writer of every report: report blocks (Markdown-ish text) to one self-contained page.

A block is ``(kind, text)``; the text is a heading (``# ``/``## ``), an image (``![alt](src)``),
a Markdown table (lines starting with ``|``) or a paragraph.  Blocks of kind ``"html"`` are
raw HTML, written as they are (and left out of Markdown reports by their writers).
"""
from __future__ import annotations

import html
import os

from .._atomic import write_text_atomic

Block = tuple[str, str]

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
         "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}"
         "th{background:#f0f0f0}")


def to_html(blocks: list[Block], title: str = "uipbench report") -> str:
    """The page for ``blocks``."""
    body = [_block(kind, text) for kind, text in blocks]
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
           f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"


def write_html(blocks: list[Block], path: str | os.PathLike, title: str = "uipbench report") -> None:
    """Write the page for ``blocks`` to ``path`` atomically."""
    write_text_atomic(path, to_html(blocks, title))


def _block(kind: str, text: str) -> str:
    if kind == "html":
        return text
    if text.startswith("# "):
        return f"<h1>{html.escape(text[2:])}</h1>"
    if text.startswith("## "):
        return f"<h2>{html.escape(text[3:])}</h2>"
    if text.startswith("!["):
        alt, src = text[2:].split("](", 1)
        return f'<p><img src="{html.escape(src[:-1])}" alt="{html.escape(alt)}" style="max-width:100%"></p>'
    if text.startswith("|"):
        return _table(text)
    return f"<p>{html.escape(text)}</p>"


def _table(text: str) -> str:
    lines = [line.strip().strip("|").split("|") for line in text.splitlines()]
    head, rows = lines[0], lines[2:]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>")
    return "".join(out) + "</table>"
