"""Model cards: a short excerpt of a README, rendered to HTML that is safe to show."""

from __future__ import annotations

import re

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

EXCERPT_CHARS = 4000
_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*(\n|\Z)", re.DOTALL)
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


def render_markdown(text: str) -> SafeString:
    """Markdown to HTML (raw HTML in the source is not rendered), then sanitised by nh3."""
    html = _markdown.render(text or "")
    clean = nh3.clean(html, link_rel="noopener noreferrer nofollow", url_schemes={"http", "https"})
    return mark_safe(clean)  # noqa: S308 - sanitised by nh3 just above
