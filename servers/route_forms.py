"""The form of a route: its public name, its policy and its members in order."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q

from servers.models import Route, ServerProfile
from servers.validation import check_route_name

MEMBER_FIELDS = [f"member_{n}" for n in range(1, Route.MAX_MEMBERS + 1)]


class RouteForm(forms.ModelForm):
    """Name and policy, and up to Route.MAX_MEMBERS profiles in the order to try them (for
    `ordered`; `least-busy` picks among them). Members are chosen from the profiles the editor
    may see."""

    class Meta:
        model = Route
        fields = ["name", "policy"]

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["name"].error_messages["required"] = (
            "Give the route a name, e.g. “qwen3-8b”: the model name clients send."
        )
        self.fields["name"].max_length = None  # the length is check_route_name's to say
        self.fields["name"].validators = []
        self.fields["name"].widget.attrs["maxlength"] = Route.NAME_MAX_LENGTH
        profiles = ServerProfile.objects.visible_to(user).order_by("name")
        choices = [("", "—"), *((p.slug, f"{p.name} ({p.model_id})") for p in profiles)]
        self._profiles = {p.slug: p for p in profiles}
        current = []
        if self.instance.pk:
            current = [m.profile.slug for m in self.instance.members.select_related("profile")]
        for index, name in enumerate(MEMBER_FIELDS):
            label = "First" if index == 0 else f"Then #{index + 1}"
            self.fields[name] = forms.ChoiceField(
                label=label,
                choices=choices,
                required=index == 0,
                initial=current[index] if index < len(current) else "",
                error_messages={
                    "required": "Pick at least one profile to serve the route.",
                    "invalid_choice": "Pick a profile from the list: that one does not exist "
                    "or is not yours to see.",
                },
            )

    def clean_name(self) -> str:
        try:
            name = check_route_name(self.cleaned_data.get("name") or "")
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        clash = ServerProfile.objects.filter(Q(name__iexact=name) | Q(slug__iexact=name)).first()
        if clash is not None:
            raise ValidationError(
                f"A server profile is already called “{clash.name}” ({clash.slug}): a route "
                "needs a name of its own, or clients could not tell which they call."
            )
        other = Route.objects.filter(name__iexact=name).exclude(pk=self.instance.pk).first()
        if other is not None:
            raise ValidationError(f"There is already a route called “{other.name}”.")
        return name

    def clean(self) -> dict:
        data = super().clean()
        slugs = [data.get(name) for name in MEMBER_FIELDS if data.get(name)]
        if len(set(slugs)) != len(slugs):
            raise ValidationError("Each profile may serve a route once: remove the repeats.")
        data["members"] = [self._profiles[slug] for slug in slugs]
        return data

    def save(self, commit: bool = True) -> Route:
        route = super().save(commit=commit)
        if commit:
            self.save_members(route)
        return route

    def save_members(self, route: Route) -> None:
        route.members.all().delete()
        for position, profile in enumerate(self.cleaned_data["members"]):
            route.members.create(profile=profile, position=position)
