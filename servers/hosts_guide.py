"""docs/hosts.md, served to admins for the Hosts page's link: the steps to add a host, where
the admin is (a file of the repository is nothing a browser can open). Rendered like a model
card (models_catalog.markdown: raw HTML off, sanitised)."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.access import staff_only
from models_catalog.markdown import render_markdown

GUIDE = "docs/hosts.md"


@staff_only
def hosts_guide(request: HttpRequest) -> HttpResponse:
    text = (settings.BASE_DIR / GUIDE).read_text(encoding="utf-8")
    context = {"guide": render_markdown(text, heading_offset=1), "source": GUIDE}
    return render(request, "servers/hosts_guide.html", context)
