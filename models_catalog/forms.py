"""The catalog's forms: search parameters, download starts and the Hub token, each field
validated with a message that says what to do."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from models_catalog.catalog import CAPABILITIES, Filters, SearchQuery
from models_catalog.characteristics import KNOWN_FAMILIES, OTHER_FAMILY
from models_catalog.hub import CURSOR_PATTERN, HUB_SORTS
from models_catalog.models import Host
from models_catalog.validators import REPO_ID_HELP, validate_repo_id, validate_revision

SORT_CHOICES = [
    ("trending", "Trending"),
    ("downloads", "Most downloads"),
    ("likes", "Most likes"),
    ("updated", "Recently updated"),
]
assert {key for key, _ in SORT_CHOICES} == set(HUB_SORTS)
BITS_CHOICES = [
    ("2", "2-bit"),
    ("3", "3-bit"),
    ("4", "4-bit"),
    ("5", "5-bit"),
    ("6", "6-bit"),
    ("8", "8-bit"),
    ("16", "16-bit"),
]
CAPABILITY_CHOICES = [("vision", "Vision"), ("tools", "Tool use"), ("thinking", "Thinking")]
assert tuple(key for key, _ in CAPABILITY_CHOICES) == CAPABILITIES
FIT_CHOICES = [("", "Any size"), ("fits", "Fits this host"), ("runs", "Fits or tight")]
FAMILY_CHOICES = [(name, name) for name in (*KNOWN_FAMILIES, OTHER_FAMILY)]
MAX_TEXT = 100
MAX_PAGE = 1000


def _choices_message(choices: list[tuple[str, str]], what: str) -> str:
    names = ", ".join(key for key, _ in choices if key)
    return f"Unknown {what} %(value)s: choose one of {names}."


class SearchForm(forms.Form):
    q = forms.CharField(
        label="Search",
        required=False,
        max_length=MAX_TEXT,
        error_messages={
            "max_length": f"Search text is limited to {MAX_TEXT} characters: shorten it."
        },
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": "Search MLX models, e.g. qwen3 4bit"}
        ),
    )
    sort = forms.ChoiceField(
        choices=SORT_CHOICES,
        required=False,
        error_messages={"invalid_choice": _choices_message(SORT_CHOICES, "sort")},
    )
    family = forms.MultipleChoiceField(
        choices=FAMILY_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"invalid_choice": _choices_message(FAMILY_CHOICES, "family")},
    )
    bits = forms.MultipleChoiceField(
        label="Quantization",
        choices=BITS_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"invalid_choice": _choices_message(BITS_CHOICES, "quantization")},
    )
    cap = forms.MultipleChoiceField(
        label="Capabilities",
        choices=CAPABILITY_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"invalid_choice": _choices_message(CAPABILITY_CHOICES, "capability")},
    )
    fit = forms.ChoiceField(
        label="Fits on this host",
        choices=FIT_CHOICES,
        required=False,
        widget=forms.RadioSelect,
        error_messages={"invalid_choice": _choices_message(FIT_CHOICES, "fit filter")},
    )
    cursor = forms.CharField(required=False, max_length=512, widget=forms.HiddenInput)
    page = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_PAGE,
        widget=forms.HiddenInput,
        error_messages={
            "invalid": "The page must be a whole number: start again from page 1.",
            "min_value": "Pages start at 1.",
            "max_value": f"Results stop at page {MAX_PAGE}: narrow the search instead.",
        },
    )

    def clean_q(self) -> str:
        text = " ".join(self.cleaned_data["q"].split())
        if any(ord(c) < 32 for c in text):
            raise forms.ValidationError("Search text cannot contain control characters.")
        return text

    def clean_sort(self) -> str:
        return self.cleaned_data["sort"] or "trending"

    def clean_cursor(self) -> str:
        cursor = self.cleaned_data["cursor"]
        if cursor and not CURSOR_PATTERN.fullmatch(cursor):
            raise forms.ValidationError(
                "That page link is damaged: start again from the first page."
            )
        return cursor

    def clean_page(self) -> int:
        return self.cleaned_data["page"] or 1

    def clean(self) -> dict:
        data = super().clean()
        if data.get("page", 1) > 1 and not data.get("cursor"):
            self.add_error("page", "A page after the first needs its page link: use Next page.")
        return data

    def query(self) -> SearchQuery:
        """The validated query (call after is_valid())."""
        data = self.cleaned_data
        return SearchQuery(
            text=data["q"],
            sort=data["sort"],
            filters=Filters(
                families=frozenset(data["family"]),
                bits=frozenset(int(b) for b in data["bits"]),
                capabilities=frozenset(data["cap"]),
                fit=data["fit"],
            ),
            cursor=data["cursor"],
            page=data["page"],
        )


class RepoIdForm(forms.Form):
    repo_id = forms.CharField(
        label="Model",
        max_length=200,
        help_text=REPO_ID_HELP,
        error_messages={"required": "Enter a model repo id, e.g. mlx-community/Qwen3-4B-4bit."},
        widget=forms.TextInput(
            attrs={"placeholder": "mlx-community/Qwen3-4B-4bit", "autocomplete": "off"}
        ),
    )

    def clean_repo_id(self) -> str:
        return validate_repo_id(self.cleaned_data["repo_id"].strip())


class HostChoiceForm(forms.Form):
    """`?host=<name>`: one of the hosts (blank: this machine's)."""

    host = forms.ModelChoiceField(
        queryset=Host.objects.all(),
        to_field_name="name",
        required=False,
        error_messages={"invalid_choice": "No host has that name: pick one of the hosts listed."},
    )


class DeleteModelForm(RepoIdForm, HostChoiceForm):
    """My models' Delete: a repo id, and the host whose disk holds it."""


class StartDownloadForm(RepoIdForm):
    revision = forms.CharField(
        label="Revision",
        max_length=128,
        required=False,
        help_text="A branch, tag or commit; empty means main.",
        widget=forms.TextInput(attrs={"placeholder": "main"}),
    )

    def clean_revision(self) -> str:
        revision = (self.cleaned_data.get("revision") or "").strip() or "main"
        return validate_revision(revision)


class HubTokenForm(forms.Form):
    token = forms.CharField(
        label="Hugging Face access token",
        max_length=400,
        strip=True,
        error_messages={"required": "Paste a Hugging Face access token (it starts with hf_)."},
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "placeholder": "hf_…"}),
        help_text="A read token from huggingface.co/settings/tokens, from an account that has "
        "accepted the terms of the gated models you want.",
    )

    def clean_token(self) -> str:
        token = self.cleaned_data["token"]
        if any(c.isspace() for c in token) or len(token) < 8 or not token.isprintable():
            raise ValidationError(
                "That does not look like a Hugging Face token: paste the whole token (hf_…), "
                "without spaces."
            )
        return token
