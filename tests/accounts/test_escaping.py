"""No text/html answer pastes what a request sent unescaped.

The "outside attack" report: an admin who opened
`/models/downloads/action/?repo_id=<script src=…></script>` got a `text/html` 400 with the repo id
pasted as is, and the script it loaded made another user superuser. The first tests replay it;
the walk below looks for the same mistake everywhere, as every role.

The walk. A marker is a script tag and an image with a handler, each naming a short token that
says where the marker was sent; a test fails if either tag appears raw in a text/html body. The
names a marker is sent under are found, not listed, so a new field or parameter is walked
without anyone adding it: the fields of every Form class loaded (`base_fields`), the names the
project's views read from `request.GET` / `POST` / `FILES` in their source, and the names of the
inputs and links of the pages themselves. For every URL pattern (with sample arguments, with a
marker in each path parameter that takes text, and with the stored objects' own arguments):

1. the page as the role sees it (its forms and names are learnt);
2. the marker in every name at once, by GET and POST, with and without `HX-Request`;
3. the marker in each name the view's own module reads, alone (a view may answer differently
   when the other names are missing);
4. every field of every form the pages showed, submitted with the marker, the other fields
   keeping the page's values, so that what a form stores is shown back by the next step;
5. every page again: objects stored with markers (by the forms, and by the `stored` fixture:
   profile, conversation, messages, API key, download, a user's email) are shown escaped.
"""

import itertools
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from django import forms
from django.conf import settings
from django.test import Client
from django.urls import Resolver404, resolve

from tests.accounts.walk import (
    RAW_MARKER,
    ROLES,
    marker,
    object_paths,
    path_marker,
    reaches,
    user_for,
)
from tests.servers.helpers import TINY_REPO
from tests.support.url_walk import all_urls, urls_with_text

ATTACK_SCRIPT = '<script src="https://evil.example/x.js"></script>'


def test_the_reported_attack_url_answers_with_the_repo_id_escaped(admin_client):
    response = admin_client.get("/models/downloads/action/", {"repo_id": ATTACK_SCRIPT})

    assert response.status_code == 400
    body = response.content.decode()
    assert "<script" not in body
    assert "&lt;script src=&quot;https://evil.example/x.js&quot;&gt;" in body
    # The message still says what is wrong, inside the fragment the model page swaps in.
    assert "is not a model repo id" in body.replace("&#x27;", "'")
    assert 'class="download-action"' in body


@pytest.mark.parametrize("repo_id", ["", "x" * 201])
def test_every_refusal_of_the_download_action_is_the_escaped_fragment(member_client, repo_id):
    response = member_client.get("/models/downloads/action/", {"repo_id": repo_id})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert 'class="download-action"' in response.content.decode()


# --- what the walk sends and looks for ----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
PROJECT_APPS = ("accounts", "models_catalog", "servers", "config")
REQUEST_READS = [
    re.compile(r"""request\.(?:GET|POST|FILES)(?:\.(?:get|getlist|pop)\(|\[)\s*["']([^"']+)["']"""),
    re.compile(r"""["']([^"']+)["']\s+(?:not\s+)?in\s+request\.(?:GET|POST|FILES)\b"""),
]


def form_field_names() -> set[str]:
    """The fields of every Form class loaded: ours, allauth's, the Django admin's."""
    seen: set[type] = set()
    todo: list[type] = [forms.BaseForm]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    return {name for cls in seen for name in getattr(cls, "base_fields", {})}


def names_read_in_source() -> dict[str, set[str]]:
    """Per module of the project: the names its code reads from request.GET / POST / FILES."""
    found: dict[str, set[str]] = {}
    for app in PROJECT_APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            text = path.read_text()
            found[module] = {name for pattern in REQUEST_READS for name in pattern.findall(text)}
    return found


SOURCE_NAMES = names_read_in_source()


def _match(path: str):
    try:
        return resolve(urlsplit(path).path)
    except Resolver404:
        return None


def names_for_view(path: str) -> set[str] | None:
    """What the view of `path` reads: the names its module reads, and its module's forms'
    (None for a view that is not the project's: allauth's and the admin's get their forms)."""
    match = _match(path)
    module_name = getattr(match.func, "view_class", match.func).__module__ if match else ""
    if module_name not in SOURCE_NAMES:
        return None
    module = sys.modules[module_name]
    names = set(SOURCE_NAMES[module_name])
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, forms.BaseForm):
            names |= set(value.base_fields)
    return names


class PageForms(HTMLParser):
    """The forms of a page (action, method, fields with the page's values) and every name a
    request from it can carry (inputs anywhere, query parameters of its links)."""

    def __init__(self, page_path: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page_path = page_path
        self.forms: list[dict] = []
        self.names: set[str] = set()
        self.link_names: dict[str, set[str]] = {}
        self._form: dict | None = None
        self._select: str | None = None
        self._options: list[tuple[str, bool]] = []
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = {key: value or "" for key, value in attrs}
        for attr in ("href", "action", "hx-get", "hx-post", "src"):
            if a.get(attr, "").startswith("/") and "?" in a[attr]:
                target = urlsplit(a[attr])
                names = {name for name, _ in parse_qsl(target.query, keep_blank_values=True)}
                self.link_names.setdefault(target.path, set()).update(names)
                self.names |= names
        if tag == "form":
            action = a.get("hx-post") or a.get("action") or a.get("hx-get") or self.page_path
            method = "post" if "hx-post" in a else (a.get("method") or "get").lower()
            htmx = any(key in a for key in ("hx-post", "hx-get", "hx-boost"))
            self._form = {"action": action, "method": method, "fields": [], "htmx": htmx}
            self.forms.append(self._form)
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in a))
        name = a.get("name")
        if not name or tag not in ("input", "select", "textarea", "button"):
            return
        self.names.add(name)
        if tag == "select":
            self._select, self._options = name, []
        elif tag == "textarea":
            self._textarea, self._text = name, ""
        elif self._form is not None:
            kind = a.get("type", "text" if tag == "input" else "submit").lower()
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            if kind in ("image", "reset", "file"):
                return
            if kind == "submit" and any(field == name for field, _ in self._form["fields"]):
                return  # the first of several buttons of one name
            self._form["fields"].append((name, a.get("value", "")))

    def handle_data(self, data):
        if self._textarea is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "select" and self._select is not None:
            chosen = [v for v, selected in self._options if selected] or [
                v for v, _ in self._options[:1]
            ]
            if self._form is not None:
                self._form["fields"].extend((self._select, v) for v in chosen)
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            if self._form is not None:
                self._form["fields"].append((self._textarea, self._text))
            self._textarea = None
        elif tag == "form":
            self._form = None


class Walker:
    """Requests as one role; keeps what it learns from the pages and what it finds."""

    def __init__(self, role: str, user=None, known: dict[str, str] | None = None) -> None:
        self.role = role
        self.user = user
        self.client = Client()
        if user is not None:
            self.client.force_login(user)
        self.tokens: dict[str, str] = dict(known or {})  # token -> where its marker was put
        self.findings: dict[tuple[str, str], str] = {}
        self.names: set[str] = set()
        self.link_names: dict[str, set[str]] = {}
        self.forms: dict[tuple, dict] = {}
        self.requests = 0

    def token(self, where: str) -> str:
        for token, known in self.tokens.items():
            if known == where:
                return token
        token = f"x{len(self.tokens)}"
        self.tokens[token] = where
        return token

    def marked(self, names) -> dict[str, str]:
        return {name: marker(self.token(f"parameter {name!r}")) for name in sorted(names)}

    def send(self, method: str, path: str, data=None, htmx: bool = False):
        """GET or POST `path` with `data` (a dict, or a list of pairs for a form's fields); a
        POST carries a dict in its query string too, since views read request.GET on POSTs."""
        headers = {"HX-Request": "true"} if htmx else {}
        if isinstance(data, list):
            pairs = data
            data = {}
            for name, value in pairs:
                data.setdefault(name, []).append(value)
        elif method == "post" and data:
            path = f"{path}{'&' if '?' in path else '?'}{urlencode(data)}"
        response = getattr(self.client, method)(path, data or {}, headers=headers)
        self.requests += 1
        shown = path if len(path) < 150 else f"{path[:150]}…"
        self.check(response, f"{method.upper()} {shown}{' (HTMX)' if htmx else ''}")
        if self.user is not None:
            cookie = response.cookies.get(settings.SESSION_COOKIE_NAME)
            if cookie is not None and not cookie.value:  # a logout form: sign in again
                self.client.force_login(self.user)
        return response

    @staticmethod
    def html(response) -> str | None:
        """The body of a text/html answer (None for any other type)."""
        is_html = "text/html" in response.get("Content-Type", "")
        if response.streaming:
            content = b"".join(response.streaming_content) if is_html else b""
            response.close()
        else:
            content = response.content
        return content.decode(errors="replace") if is_html else None

    def check(self, response, request: str) -> None:
        html = self.html(response)
        for match in RAW_MARKER.finditer(html or ""):
            where = self.tokens.get(match[1] or match[2], "an unknown place")
            around = html[max(0, match.start() - 100) : match.end() + 10].replace("\n", " ")
            self.findings.setdefault(
                (request.split("?")[0], where),
                f"{self.role}: {request} -> {response.status_code} pastes the marker of "
                f"{where} raw: …{around}…",
            )

    def learn(self, path: str, response) -> None:
        """The names and forms of a page this role was shown."""
        if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
            return
        page = PageForms(urlsplit(path).path)
        page.feed(response.content.decode(errors="replace"))
        page.close()
        self.names |= page.names
        for target, names in page.link_names.items():
            self.link_names.setdefault(target, set()).update(names)
        for form in page.forms:
            key = (form["action"], form["method"], tuple(name for name, _ in form["fields"]))
            self.forms.setdefault(key, form)


def _destructive_last(form: dict) -> bool:
    return any(word in form["action"] for word in ("delete", "revoke", "logout", "remove"))


def walk(walker: Walker, targets: list[str]) -> None:
    for path in targets:  # 1. the pages as this role sees them
        for htmx in (False, True):
            walker.learn(path, walker.send("get", path, htmx=htmx))
    everything = form_field_names() | set().union(*SOURCE_NAMES.values()) | walker.names
    every_name = walker.marked(everything)
    for path in targets:  # 2. the marker in every name at once
        for method, htmx in itertools.product(("get", "post"), (False, True)):
            walker.send(method, path, every_name, htmx)
    for path in targets:  # 3. each name the view reads, alone
        if reaches(walker.role, path) and (names := names_for_view(path)) is not None:
            names |= walker.link_names.get(urlsplit(path).path, set())
            for name, method in itertools.product(sorted(names), ("get", "post")):
                walker.send(method, path, walker.marked([name]))
    for form in sorted(walker.forms.values(), key=_destructive_last):  # 4. every form field
        for index, (name, _) in enumerate(form["fields"]):
            fields = list(form["fields"])
            where = f"field {name!r} of the form to {form['action']}"
            fields[index] = (name, marker(walker.token(where)))
            for htmx in (False, True) if form["htmx"] else (False,):
                if form["method"] == "post":
                    walker.send("post", form["action"], fields, htmx)
                else:
                    query = urlencode(fields)
                    walker.send("get", f"{form['action'].split('?')[0]}?{query}", htmx=htmx)
    for path in targets:  # 5. what was stored, shown back
        for htmx in (False, True):
            walker.send("get", path, htmx=htmx)


@pytest.mark.slow
# Thousands of requests rendered in this process, nothing waited on: ~2 minutes of CPU for the
# admin alone, and in `make test` the 2 cores are shared with the other workers (and, on a
# developer's machine, with whatever else runs). The suite's 300 s cap guards against hangs;
# this one does not hang, it only goes slower under load.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("role", ROLES)
def test_no_text_html_answer_pastes_a_marker_unescaped(
    role, stored, member, admin_member, make_user
):
    from django.contrib.auth.models import Group

    from models_catalog.models import Download
    from servers.models import Conversation, ServerProfile

    walker = Walker(role, user_for(role, member, admin_member, make_user), known=stored)
    in_path = walker.token("a path parameter")
    pks = {obj.pk for model in (Download, Conversation) for obj in model.objects.all()}
    pks |= {member.pk, admin_member.pk}
    pks |= set(Group.objects.values_list("pk", flat=True))  # the stored group's pages
    targets = [url.path for url in all_urls()]
    targets += [url.path for url in urls_with_text(path_marker(in_path))]
    targets.append(f"/no-such-page/{path_marker(in_path)}/")
    if role in ("member", "admin"):
        targets += object_paths(
            {"pk": sorted(pks), "slug": [p.slug for p in ServerProfile.objects.all()],
             "repo_id": [TINY_REPO, "test-org/tiny-llama"]}
        )  # fmt: skip

    walk(walker, targets)

    assert walker.requests > 1000 and len(walker.forms) >= (10 if role == "admin" else 1)
    found = sorted(walker.findings.values())
    assert found == [], f"{len(found)} raw markers:\n" + "\n\n".join(found)
