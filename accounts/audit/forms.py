from django import forms
from django.db.models import Q

from accounts.audit.models import Action, AuditQuerySet


class AuditFilterForm(forms.Form):
    """The Audit page's filters (all optional, combined): person, kind, object, dates."""

    person = forms.CharField(
        required=False, max_length=254, label="Person",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Who, or whose (email)"}),
    )  # fmt: skip
    action = forms.ChoiceField(
        required=False, label="Kind", choices=[("", "All kinds"), *Action.choices]
    )
    object = forms.CharField(
        required=False, max_length=255, label="Object",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Name, type or id"}),
    )  # fmt: skip
    since = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, admin: bool, **kwargs):
        super().__init__(*args, **kwargs)
        if not admin:  # a member sees entries about themselves only: no one else to pick
            del self.fields["person"]
        self.fields["action"].error_messages["invalid_choice"] = (
            "Pick a kind from the list (“%(value)s” is not one)."
        )
        for name in ("since", "until"):
            self.fields[name].error_messages["invalid"] = "Give a date as YYYY-MM-DD."

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            raise forms.ValidationError(
                f"“From” ({since:%Y-%m-%d}) is after “To” ({until:%Y-%m-%d}): swap the dates."
            )
        return cleaned

    def filter(self, entries: AuditQuerySet) -> AuditQuerySet:
        """The entries that match; none while a filter is invalid (its message says why)."""
        if not self.is_valid():
            return entries.none()
        data = self.cleaned_data
        if person := (data.get("person") or "").strip():
            entries = entries.filter(
                Q(actor_label__icontains=person) | Q(owner__email__icontains=person)
            )
        if action := data.get("action"):
            entries = entries.filter(action=action)
        if text := (data.get("object") or "").strip():
            entries = entries.filter(
                Q(object_label__icontains=text) | Q(object_type__icontains=text) | Q(object_id=text)
            )
        if since := data.get("since"):
            entries = entries.filter(at__date__gte=since)
        if until := data.get("until"):
            entries = entries.filter(at__date__lte=until)
        return entries
