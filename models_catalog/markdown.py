"""Model cards: a short excerpt of a README, rendered to HTML that is safe to show."""

from __future__ import annotations

import re

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

EXCERPT_CHARS = 4000
_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*(\n|\Z)", re.DOTALL)
_HEADING = re.compile(r"<(/?)h([1-6])")
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def readme_excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The README without its YAML front matter, cut after whole paragraphs near `limit`."""
    body = _FRONT_MATTER.sub("", text or "", count=1).strip()
    if len(body) <= limit:
        return body
    cut = body.rfind("\n\n", 0, limit)
    cut = cut if cut > limit // 2 else limit
    excerpt = body[:cut].rstrip()
    if excerpt.count("```") % 2:  # do not leave a code block open
        excerpt += "\n```"
    return excerpt + "\n\n…"


def render_markdown(text: str, heading_offset: int = 0) -> SafeString:
    """Markdown to HTML (raw HTML in the source is not rendered), then sanitised by nh3.

    `heading_offset` demotes headings (2: `#` becomes `<h3>`) so that a model card's title does
    not compete with the page's own `<h1>`."""
    html = _markdown.render(text or "")
    if heading_offset:
        html = _HEADING.sub(lambda m: f"<{m[1]}h{min(6, int(m[2]) + heading_offset)}", html)
    clean = nh3.clean(html, link_rel="noopener noreferrer nofollow", url_schemes={"http", "https"})
    return mark_safe(clean)  # noqa: S308 - sanitised by nh3 just above
