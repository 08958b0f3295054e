"""Every URL pattern of the project as a concrete path, for tests that must cover all views.

The paths come from the URL resolver itself: each pattern's regular expression is turned into
a short string it matches (path parameters get plausible values: `<int:pk>` → `1`,
`<slug:…>` → `a`), and the result is checked to resolve back to the same view. A new view
is therefore walked without anyone adding it to a list.

`urls_with_text(text)` does the same with `text` in every path parameter whose pattern accepts
it (`<path:…>`, a free regex group), for tests that send hostile input through the path too.
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
    filled: tuple[str, ...] = ()  # the arguments holding the text of `urls_with_text`

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


def sample_for(pattern: str | sre_parse.SubPattern, fill: dict[int, str] | None = None) -> str:
    """A short string that `pattern` matches (anchors produce nothing); the groups numbered in
    `fill` get its text instead of a sample (whether they match it is for the caller to check)."""
    fill = fill or {}
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
            out.append(sample_for(sub, fill) * max(low, 1) if low else sample_for(sub, fill))
        elif op is C.SUBPATTERN:
            group = value[0]
            out.append(fill[group] if group in fill else sample_for(value[-1], fill))
        elif op is C.BRANCH:
            out.append(sample_for(value[1][0], fill))
        elif op is C.ATOMIC_GROUP:
            out.append(sample_for(value, fill))
        elif op in (C.AT, C.ASSERT, C.ASSERT_NOT, C.GROUPREF):
            continue
        else:  # pragma: no cover - a pattern feature this helper does not know yet
            raise ValueError(f"cannot make a sample for regex op {op}")
    return "".join(out)


def _walk(resolver: URLResolver, regexes: tuple, namespace: str):
    """(pattern, the regular expressions from the root down to it, its namespaced name)."""
    for entry in resolver.url_patterns:
        chain = (*regexes, entry.pattern.regex)
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _walk(entry, chain, inner)
        elif isinstance(entry, URLPattern):
            yield entry, chain, f"{namespace}{entry.name}" if entry.name else None


def _path(chain: tuple, fill: dict[tuple[int, int], str] | None = None) -> str:
    """The path made of each regex's sample; `fill` maps (level, group number) to a text."""
    fill = fill or {}
    return "/" + "".join(
        sample_for(regex.pattern, {g: text for (at, g), text in fill.items() if at == level})
        for level, regex in enumerate(chain)
    )


def _walked(entry, chain, name, fill=None, filled=()) -> WalkedUrl:
    params = tuple(group for regex in chain for group in regex.groupindex)
    return WalkedUrl(_path(chain, fill), name, str(entry.pattern), params, tuple(filled))


def _resolves_to(path: str, entry, kwargs: dict[str, str] | None = None) -> bool:
    try:
        match = resolve(path)
    except Exception:  # noqa: BLE001 - not resolving is the answer
        return False
    return match.func == entry.callback and all(
        match.kwargs.get(key) == value for key, value in (kwargs or {}).items()
    )


def all_urls() -> list[WalkedUrl]:
    """One concrete path per URL pattern; fails loudly if a pattern cannot be reached."""
    urls, unreachable = [], []
    for entry, chain, name in _walk(get_resolver(), (), ""):
        walked = _walked(entry, chain, name)
        if not _resolves_to(walked.path, entry):
            unreachable.append(walked)
        urls.append(walked)
    if unreachable:
        listing = "\n".join(f"  {url}" for url in unreachable)
        raise AssertionError(f"No sample path resolves to these patterns:\n{listing}")
    return urls


def urls_with_text(text: str) -> list[WalkedUrl]:
    """Every pattern with a parameter that can hold `text`, as a path with `text` in each such
    parameter (the others keep their sample): checked by resolving it back, so the view
    receives `text` itself. The path is unquoted, as Django's test client takes it."""
    urls = []
    for entry, chain, name in _walk(get_resolver(), (), ""):
        taking: dict[tuple[int, int], str] = {}
        for level, regex in enumerate(chain):
            for group_name, group in regex.groupindex.items():
                path = _path(chain, {(level, group): text})
                if _resolves_to(path, entry, {group_name: text}):
                    taking[(level, group)] = group_name
        if taking:
            fill = dict.fromkeys(taking, text)
            walked = _walked(entry, chain, name, fill, taking.values())
            assert _resolves_to(walked.path, entry, dict.fromkeys(taking.values(), text)), walked
            urls.append(walked)
    return urls
