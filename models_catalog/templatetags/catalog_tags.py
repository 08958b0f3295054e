"""Template filters for catalog pages."""

from django import template
from django.utils.safestring import SafeString

from models_catalog.hosts.facts import heard_ago as _heard_ago
from models_catalog.markdown import render_markdown

register = template.Library()


@register.filter
def markdown(text: str, heading_offset: int = 0) -> SafeString:
    """Render Markdown safely (raw HTML dropped, the rest sanitised); `|markdown:2` demotes
    headings by two levels."""
    return render_markdown(text, int(heading_offset))


@register.filter
def compact(number: int | None) -> str:
    """`95120` → `95.1K`, `2100000` → `2.1M`."""
    if number is None:
        return ""
    for limit, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "K")):
        if number >= limit:
            return f"{number / limit:.1f}".removesuffix(".0") + suffix
    return str(number)


@register.filter
def heard_ago(when) -> str:
    """A host's last heartbeat, for "… ago" (seconds under a minute: models_catalog.hosts.facts)."""
    return _heard_ago(when)
