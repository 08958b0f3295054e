"""Every URL pattern of the project as a concrete path, for tests that must cover all views.

The paths come from the URL resolver itself: each pattern's regular expression is turned into
a short string it matches (path parameters get plausible values: `<int:pk>` → `1`,
`<slug:…>` → `a`), and the result is checked to resolve back to the same view. A new view
is therefore walked without anyone adding it to a list.
"""

from dataclasses import dataclass
from re import _constants as C
from re import _parser as sre_parse

from django.urls import URLPattern, URLResolver, get_resolver, resolve


@dataclass(frozen=True)
class WalkedUrl:
    path: str
    name: str | None  # the namespaced URL name, e.g. "accounts:users"
    route: str  # the pattern text, for messages
    params: tuple[str, ...] = ()  # the names of its arguments, e.g. ("slug",)

    def __str__(self) -> str:
        return f"{self.path} ({self.name or 'unnamed'}: {self.route})"


def _char_from_set(items) -> str:
    negate = any(op is C.NEGATE for op, _ in items)
    allowed: list[str] = []
    excluded: set[str] = set()
    for op, value in items:
        if op is C.LITERAL and negate:
            excluded.add(chr(value))
        elif op is C.LITERAL:
            allowed.append(chr(value))
        elif op is C.RANGE:
            low, high = value
            for preferred in "a1A":
                if low <= ord(preferred) <= high:
                    allowed.append(preferred)
            allowed.append(chr(low))
        elif op is C.CATEGORY:
            allowed.append({C.CATEGORY_DIGIT: "1", C.CATEGORY_SPACE: " "}.get(value, "a"))
    if negate:
        return next(c for c in "a1xZ" if c not in excluded)
    for preferred in "a1A":
        if preferred in allowed:
            return preferred
    return allowed[0]


def sample_for(pattern: str | sre_parse.SubPattern) -> str:
    """A short string that `pattern` matches (anchors produce nothing)."""
    parsed = sre_parse.parse(pattern) if isinstance(pattern, str) else pattern
    out = []
    for op, value in parsed:
        if op is C.LITERAL:
            out.append(chr(value))
        elif op is C.NOT_LITERAL:
            out.append("a" if chr(value) != "a" else "b")
        elif op is C.ANY:
            out.append("a")
        elif op is C.IN:
            out.append(_char_from_set(value))
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            low, _high, sub = value
            out.append(sample_for(sub) * max(low, 1) if low else sample_for(sub))
        elif op is C.SUBPATTERN:
            out.append(sample_for(value[-1]))
        elif op is C.BRANCH:
            out.append(sample_for(value[1][0]))
        elif op is C.ATOMIC_GROUP:
            out.append(sample_for(value))
        elif op in (C.AT, C.ASSERT, C.ASSERT_NOT, C.GROUPREF):
            continue
        else:  # pragma: no cover - a pattern feature this helper does not know yet
            raise ValueError(f"cannot make a sample for regex op {op}")
    return "".join(out)


def _walk(resolver: URLResolver, prefix: str, namespace: str, params: tuple[str, ...] = ()):
    for entry in resolver.url_patterns:
        piece = sample_for(entry.pattern.regex.pattern)
        names = params + tuple(entry.pattern.regex.groupindex)
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _walk(entry, prefix + piece, inner, names)
        elif isinstance(entry, URLPattern):
            name = f"{namespace}{entry.name}" if entry.name else None
            yield entry, WalkedUrl(prefix + piece, name, str(entry.pattern), names)


def all_urls() -> list[WalkedUrl]:
    """One concrete path per URL pattern; fails loudly if a pattern cannot be reached."""
    urls, unreachable = [], []
    for entry, walked in _walk(get_resolver(), "/", ""):
        try:
            match = resolve(walked.path)
        except Exception:  # noqa: BLE001 - reported below
            match = None
        if match is None or match.func != entry.callback:
            unreachable.append(walked)
        urls.append(walked)
    if unreachable:
        listing = "\n".join(f"  {url}" for url in unreachable)
        raise AssertionError(f"No sample path resolves to these patterns:\n{listing}")
    return urls
