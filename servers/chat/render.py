"""Model output (untrusted) as safe HTML: markdown-it with raw HTML off, then nh3 sanitising;
and a reply's thinking split from its answer. While a reply streams the browser inserts it as
text only; once complete it is rendered here and stored. See docs/chat.md, "Safety of model
output"."""

from __future__ import annotations

import re

import nh3
from markdown_it import MarkdownIt

_markdown = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(
    ["table", "strikethrough"]
)
_ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code",
    "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
# A cell's class: only the alignments below (nh3's allowed_classes).
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "ol": {"start"}}
_ALIGN_CLASSES = {"align-left", "align-center", "align-right"}
# markdown-it aligns table cells with a style attribute, which the Content-Security-Policy
# (style-src 'self') refuses: a class of static/css/chat.css does it instead.
_CELL_ALIGN = re.compile(r'(<t[hd]) style="text-align:(left|center|right)"')


def render_markdown(text: str) -> str:
    """Safe HTML for a model's (or anyone's) markdown: no raw HTML, no scripts, no handlers,
    no style attributes."""
    html = _CELL_ALIGN.sub(r'\1 class="align-\2"', _markdown.render(text or ""))
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        allowed_classes={"th": _ALIGN_CLASSES, "td": _ALIGN_CLASSES},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


_THINK = re.compile(r"^\s*<think>(.*?)(?:</think>|$)(.*)$", re.DOTALL)


def split_thinking(content: str) -> tuple[str, str]:
    """(reasoning, answer) of a reply whose content may start with `<think>…</think>` (pure).
    An unclosed `<think>` (a reply stopped while thinking) is all reasoning."""
    match = _THINK.match(content or "")
    if not match:
        return "", content or ""
    return match.group(1).strip(), match.group(2).lstrip()
