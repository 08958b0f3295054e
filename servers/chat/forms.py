"""Forms of the chat page: a message to send (with its parameters and text attachments)."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from servers.chat.attachments import read_attachment
from servers.models import Conversation, ServerProfile


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    widget = MultipleFileInput

    def clean(self, data, initial=None):
        if not data:
            return []
        if not isinstance(data, (list, tuple)):
            data = [data]
        return [super(MultipleFileField, self).clean(item, initial) for item in data]


class ChatMessageForm(forms.Form):
    """One message to send. `retry` sends the conversation again without a new message."""

    profile = forms.ModelChoiceField(
        queryset=ServerProfile.objects.select_related("host"),
        to_field_name="slug",
        error_messages={"invalid_choice": "Pick a server: that one does not exist (any more)."},
    )
    conversation = forms.IntegerField(required=False, widget=forms.HiddenInput)
    message = forms.CharField(required=False, strip=True, max_length=200_000,
                              widget=forms.Textarea(attrs={"rows": 3}))  # fmt: skip
    temperature = forms.FloatField(required=False, min_value=0.0, max_value=2.0)
    max_tokens = forms.IntegerField(required=False, min_value=1)
    # An empty file gets read_attachment's message, which names it.
    files = MultipleFileField(required=False, allow_empty_file=True)
    retry = forms.BooleanField(required=False)

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        if user is not None:  # a profile of another team is not there for them
            self.fields["profile"].queryset = ServerProfile.objects.visible_to(user).select_related(
                "host"
            )

    def clean_conversation(self) -> Conversation | None:
        pk = self.cleaned_data.get("conversation")
        if pk is None:
            return None
        conversation = Conversation.objects.filter(pk=pk, user=self.user).first()
        if conversation is None:
            raise ValidationError("That conversation does not exist or is not yours.")
        return conversation

    def clean_files(self) -> list[dict]:
        files = self.cleaned_data.get("files") or []
        if len(files) > settings.CHAT_ATTACHMENT_MAX_FILES:
            raise ValidationError(
                f"Attach at most {settings.CHAT_ATTACHMENT_MAX_FILES} files to one message."
            )
        return [read_attachment(f.name, f.read(), getattr(f, "content_type", None)) for f in files]

    def clean(self):
        data = super().clean()
        profile = data.get("profile")
        max_tokens = data.get("max_tokens")
        if profile and max_tokens and max_tokens > profile.max_tokens:
            self.add_error(
                "max_tokens",
                f"{profile.name} allows at most {profile.max_tokens} tokens per reply.",
            )
        if data.get("retry"):
            if not data.get("conversation"):
                raise ValidationError("There is nothing to retry yet: send a message.")
        elif not data.get("message") and not data.get("files"):
            raise ValidationError("Write a message (or attach a text file) first.")
        return data

    def first_error(self) -> str:
        """The first error, after the field's label where the error does not name its subject
        (an attachment's error names the file)."""
        for field, errors in self.errors.items():
            label = "" if field in ("__all__", "files") else f"{self[field].label}: "
            return label + errors[0]
        return "The message could not be sent."


class RenameForm(forms.ModelForm):
    class Meta:
        model = Conversation
        fields = ["title"]

    def clean_title(self) -> str:
        title = self.cleaned_data["title"].strip()
        if not title:
            raise ValidationError("A conversation needs a title.")
        return title
