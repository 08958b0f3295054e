"""Forms of the chat page: a message to send (new, a regenerated answer, or an edit of an
earlier one, with text attachments), a conversation's settings, its title, and the search."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator

from accounts.teams import membership
from common.bounds import bounds
from servers.chat.attachments import read_attachment
from servers.chat.conversations import holds_images
from servers.chat.images import read_image
from servers.gateway import images, routing
from servers.gateway.errors import GatewayError
from servers.models import (
    CONVERSATION_SYSTEM_PROMPT_MAX_CHARS,
    Conversation,
    Engine,
    Message,
    ServerProfile,
)
from servers.validation import max_tokens_refusal


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


ROUTE_PREFIX = "route:"


def route_target(value: str, user) -> routing.Target | None:
    """The route a picker's value "route:<name>" names for `user`, its chat members (text and
    vision: routing.resolve) in the order to try them; None when it names none they may use."""
    try:
        target = routing.resolve(
            value[len(ROUTE_PREFIX) :], user, membership(user).group_ids, "chat/completions"
        )
    except GatewayError:
        return None
    return target if target.route is not None else None


def members_for_turn(profiles: list[ServerProfile], has_images: bool) -> list[ServerProfile]:
    """A route's chat members in the order to try them for a turn: when what the turn sends
    holds images (the new message's, or the conversation's earlier ones), its vision members only
    (routing.seeing), in that order. A route without one keeps them all: its text member gets the
    earlier images named in the text (replies.build_messages), and new ones are refused."""
    return routing.seeing(profiles, has_images) or profiles


class ChatMessageForm(forms.Form):
    """One message to send. `retry` answers the last question again (after an error, or to
    regenerate the last reply); `edit` (a message of the conversation) replaces that message
    with `message` and drops everything after it."""

    profile = forms.ModelChoiceField(
        queryset=ServerProfile.objects.for_chat().select_related("host"),
        to_field_name="slug",
        error_messages={
            "invalid_choice": "Pick a server: that one does not exist (any more), or it does "
            "not chat (embeddings, speech to text)."
        },
    )
    conversation = forms.IntegerField(required=False, widget=forms.HiddenInput)
    message = forms.CharField(required=False, strip=True, max_length=200_000,
                              widget=forms.Textarea(attrs={"rows": 3}))  # fmt: skip
    # An empty file gets read_attachment's message, which names it.
    files = MultipleFileField(required=False, allow_empty_file=True)
    # Images for a vision server (servers/chat/images.py), up to MAX_IMAGES_PER_MESSAGE.
    images = MultipleFileField(required=False, allow_empty_file=True)
    retry = forms.BooleanField(required=False)
    edit = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, user=None, **kwargs):
        # A route ("route:<name>" in the picker) is sent to the member it picks now
        # (servers/gateway/routing.py); `route` names it for the usage record.
        self.route = None
        self.others: list[ServerProfile] = []  # a route's other members, to try after
        data = args[0] if args else kwargs.get("data")
        picked = data.get("profile", "") if data is not None and user is not None else ""
        if picked.startswith(ROUTE_PREFIX):
            target = route_target(picked, user)
            if target is not None:
                data = data.copy()
                data["profile"] = target.profiles[0].slug
                self.route = target.route
                self.others = target.profiles[1:]
                args = (data, *args[1:]) if args else args
                kwargs = kwargs if args else {**kwargs, "data": data}
        super().__init__(*args, **kwargs)
        self.user = user
        if user is not None:  # a profile of another team is not there for them
            self.fields["profile"].queryset = (
                ServerProfile.objects.visible_to(user).for_chat().select_related("host")
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

    def clean_images(self) -> list:
        uploads = self.cleaned_data.get("images") or []
        if len(uploads) > images.MAX_IMAGES_PER_MESSAGE:
            raise ValidationError(
                f"Attach at most {images.MAX_IMAGES_PER_MESSAGE} images to one message "
                f"({len(uploads)} were attached)."
            )
        return [read_image(f.name, f) for f in uploads]

    def clean(self):
        data = super().clean()
        conversation = data.get("conversation")
        if data.get("edit") is not None:
            edited = (
                Message.objects.filter(conversation=conversation, pk=data["edit"],
                                       role=Message.Role.USER).first()
                if conversation else None
            )  # fmt: skip
            if edited is None:
                raise ValidationError("That message is not in this conversation (any more).")
            data["edit"] = edited
        profile = data.get("profile")
        if self.route is not None and profile is not None:
            # A turn whose messages hold images goes to the route's vision members, in order:
            # the new message's images, or the conversation's (those an edit keeps).
            has_images = bool(data.get("images")) or (
                conversation is not None and holds_images(conversation, data.get("edit"))
            )
            profile, *self.others = members_for_turn([profile, *self.others], has_images)
            data["profile"] = profile
        if data.get("images") and profile is not None and profile.engine != Engine.VISION:
            who = (
                f"No server of the route {self.route.name} sees images: they run text models."
                if self.route is not None
                else f"{profile.name} cannot see images: it runs a text model."
            )
            raise ValidationError(
                f"{who} Pick a server with the vision engine, or remove the images."
            )
        if data.get("retry"):
            if not conversation:
                raise ValidationError("There is nothing to retry yet: send a message.")
            return data
        if edited := data.get("edit"):
            if not data.get("message") and not edited.attachments and not edited.images.exists():
                raise ValidationError("An edited message cannot be empty: write something.")
            return data
        if not data.get("message") and not data.get("files") and not data.get("images"):
            raise ValidationError("Write a message (or attach a file or an image) first.")
        return data


def first_error(*forms_: forms.BaseForm) -> str:
    """The first error of the forms, after the field's label where the error does not name its
    subject (an attachment's error names the file)."""
    for form in forms_:
        for field, errors in form.errors.items():
            label = "" if field in ("__all__", "files", "images") else f"{form[field].label}: "
            return label + errors[0]
    return "The message could not be sent."


_TEMPERATURE = Conversation._meta.get_field("temperature")
_MAX_TOKENS = Conversation._meta.get_field("max_tokens")


class ConversationSettingsForm(forms.ModelForm):
    """A conversation's own system prompt, temperature and max tokens (empty: the profile's).
    Sent with every message, and saved on their own from the settings panel."""

    class Meta:
        model = Conversation
        fields = ["system_prompt", "temperature", "max_tokens"]
        labels = {"system_prompt": "System prompt", "max_tokens": "Max tokens"}
        widgets = {
            "system_prompt": forms.Textarea(attrs={"rows": 3}),
            "temperature": forms.NumberInput(attrs={"step": "0.1", "inputmode": "decimal"}),
        }

    def __init__(self, *args, profile: ServerProfile | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.profile = profile
        low, high = 0.0, 2.0
        self.fields["temperature"].error_messages.update(
            min_value=f"Use a value from {low:g} to {high:g} (0 picks the likeliest word; 0.7 "
            "is usual for chat).",
            max_value=f"Use a value from {low:g} to {high:g} (0 picks the likeliest word; 0.7 "
            "is usual for chat).",
        )
        self.fields["max_tokens"].error_messages.update(
            min_value="A reply needs at least 1 token.",
            max_value=f"At most {bounds(_MAX_TOKENS)[1]} tokens.",
        )
        prompt = self.fields["system_prompt"]
        prompt.validators = [
            *(v for v in prompt.validators if not isinstance(v, MaxLengthValidator)),
            MaxLengthValidator(
                CONVERSATION_SYSTEM_PROMPT_MAX_CHARS,
                f"Keep it under {CONVERSATION_SYSTEM_PROMPT_MAX_CHARS:,} characters (it has "
                "%(show_value)s): it is sent with every message and takes room from the reply.",
            ),
        ]
        if profile is not None:
            self.fields["system_prompt"].widget.attrs["placeholder"] = (
                profile.system_prompt or "None: the model's default behaviour."
            )
            self.fields["temperature"].widget.attrs["placeholder"] = f"{profile.temperature:g}"
            self.fields["max_tokens"].widget.attrs["placeholder"] = str(profile.max_tokens)
            if profile.max_tokens_cap:
                self.fields["max_tokens"].widget.attrs["max"] = str(profile.max_tokens_cap)

    def clean(self):
        data = super().clean()
        max_tokens = data.get("max_tokens")
        # The profile's own cap here; one from the model's context is the gateway's (schema).
        if (
            self.profile is not None
            and max_tokens
            and (message := max_tokens_refusal(max_tokens, self.profile.max_tokens_cap,
                                               self.profile.name))
        ):  # fmt: skip
            self.add_error("max_tokens", message)
        return data

    @property
    def values(self) -> dict:
        """The cleaned settings sent, as Conversation fields (one not sent stays as it is)."""
        return {name: self.cleaned_data[name] for name in self.Meta.fields if name in self.data}

    def save_settings(self) -> Conversation:
        """Store the settings without moving the conversation in the list (updated_at stays)."""
        Conversation.objects.filter(pk=self.instance.pk).update(**self.values)
        return self.instance


class RenameForm(forms.ModelForm):
    class Meta:
        model = Conversation
        fields = ["title"]

    def clean_title(self) -> str:
        title = self.cleaned_data["title"].strip()
        if not title:
            raise ValidationError("A conversation needs a title.")
        return title

    def rename(self) -> Conversation:
        """The new title, the conversation keeping its place in the list (updated_at stays)."""
        Conversation.objects.filter(pk=self.instance.pk).update(title=self.instance.title)
        return self.instance


SEARCH_MAX_CHARS = 200


class SearchForm(forms.Form):
    q = forms.CharField(required=False, strip=True, max_length=SEARCH_MAX_CHARS,
                        error_messages={"max_length": f"Search for at most {SEARCH_MAX_CHARS} "
                                        "characters."})  # fmt: skip


class ShownForm(forms.Form):
    """How much of a stopped reply the page had shown (characters: code points)."""

    content_chars = forms.IntegerField(min_value=0, max_value=10_000_000)
    reasoning_chars = forms.IntegerField(min_value=0, max_value=10_000_000)
