"""Forms of the catalog's download side: they validate, views only call them."""

from django import forms
from django.core.exceptions import ValidationError

from models_catalog.validators import REPO_ID_HELP, validate_repo_id, validate_revision


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
