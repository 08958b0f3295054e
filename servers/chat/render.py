"""Model output and members' messages (untrusted) as safe HTML: markdown-it with raw HTML off,
code blocks highlighted by Pygments, then nh3 sanitising; and a reply's thinking split from
its answer. While a reply streams the browser inserts it as text only; once complete it is
rendered here and stored. See docs/chat.md, "Safety of model output".

Highlighting runs here, not in the browser: the stored HTML is final (no client library, no
`eval`, nothing the Content-Security-Policy has to allow), and Pygments' output is spans with
token classes that the allow-list below names one by one.
"""

from __future__ import annotations

import re

import nh3
from markdown_it import MarkdownIt
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

# A code block longer than this is shown plain: highlighting is linear, but a reply can be long.
HIGHLIGHT_MAX_CHARS = 100_000
_formatter = HtmlFormatter(nowrap=True)


def _highlight(code: str, lang: str, attrs: object) -> str:
    """The inside of a fenced block's <code>: Pygments' spans for a language it knows; "" (the
    block escaped by markdown-it) for one it does not, or for a very long block."""
    if not lang or len(code) > HIGHLIGHT_MAX_CHARS:
        return ""
    try:
        lexer = get_lexer_by_name(lang.lower(), stripnl=False, ensurenl=False)
    except ClassNotFound:
        return ""
    return pygments_highlight(code, lexer, _formatter)


_markdown = MarkdownIt("commonmark", {"html": False, "breaks": True, "highlight": _highlight})
_markdown.enable(["table", "strikethrough"])
_ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code",
    "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
    "span",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "ol": {"start"}}
_ALIGN_CLASSES = {"align-left", "align-center", "align-right"}
# Pygments' token classes (static/css/pygments.css colours them); no other class on a span.
_TOKEN_CLASSES = {name for name in STANDARD_TYPES.values() if name}
# markdown-it aligns table cells with a style attribute, which the Content-Security-Policy
# (style-src 'self') refuses: a class of static/css/chat.css does it instead.
_CELL_ALIGN = re.compile(r'(<t[hd]) style="text-align:(left|center|right)"')


def render_markdown(text: str) -> str:
    """Safe HTML for a model's (or anyone's) markdown: no raw HTML, no scripts, no handlers,
    no style attributes; code blocks highlighted."""
    html = _CELL_ALIGN.sub(r'\1 class="align-\2"', _markdown.render(text or ""))
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        allowed_classes={"th": _ALIGN_CLASSES, "td": _ALIGN_CLASSES, "span": _TOKEN_CLASSES},
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
