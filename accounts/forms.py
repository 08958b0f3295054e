from django import forms
from django.contrib.auth.forms import AdminUserCreationForm as DjangoAdminUserCreationForm
from django.contrib.auth.forms import UserChangeForm
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from accounts import approval, groups
from accounts.models import ApiKey, Limits, User
from accounts.teams import LIMIT_FIELDS, LIMIT_NAMES
from common.bounds import bounds


class ApiKeyForm(forms.ModelForm):
    """Name a new API key. The key itself is made by `accounts.api_keys.create_api_key`."""

    class Meta:
        model = ApiKey
        fields = ["name"]
        widgets = {
            "name": forms.TextInput(
                attrs={"placeholder": "e.g. laptop, open-webui, ci", "autocomplete": "off"}
            )
        }
        help_texts = {"name": "Where you will use this key, so you can tell keys apart."}

    def __init__(self, *args, user: User, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["name"].error_messages.update(
            required="Give the key a name, e.g. where you will use it.",
            max_length=f"Keep the name to {ApiKey.NAME_MAX_LENGTH} characters or fewer.",
        )

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise ValidationError("Give the key a name, e.g. where you will use it.")
        if ApiKey.objects.filter(user=self.user, name__iexact=name, revoked_at__isnull=True):
            raise ValidationError(
                f"You already have a key named “{name}”. Pick another name, or revoke that "
                "key first."
            )
        return name


class UserFilterForm(forms.Form):
    """The Users page's filter by status and search by email."""

    status = forms.ChoiceField(choices=[("", "All statuses"), *User.Status.choices], required=False)
    q = forms.CharField(required=False, max_length=254, label="Search email")

    def filter(self, users):
        if not self.is_valid():
            return users
        if status := self.cleaned_data["status"]:
            users = users.filter(status=status)
        if q := self.cleaned_data["q"].strip():
            users = users.filter(email__icontains=q)
        return users


class AdminUserChangeForm(UserChangeForm):
    """The Django admin's user change form: refuses edits that would take admin rights from
    the last active admin (through status, active, staff or superuser)."""

    class Meta(UserChangeForm.Meta):
        model = User
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()

        def proposed(name: str):
            return cleaned.get(name, getattr(self.instance, name))

        will_be_active_admin = (
            proposed("is_active")
            and proposed("status") == User.Status.APPROVED
            and (proposed("is_staff") or proposed("is_superuser"))
        )
        try:
            approval.ensure_edit_allowed(self.instance, will_be_active_admin=will_be_active_admin)
        except approval.LastAdminError as error:
            raise ValidationError(error.messages, code="last_admin") from error
        return cleaned


class AdminGroupForm(forms.ModelForm):
    """The Django admin's group form: the name checked as on the Groups page."""

    class Meta:
        model = Group
        fields = ["name", "permissions"]

    def clean_name(self) -> str:
        return groups.checked_name(self.cleaned_data["name"], other_than=self.instance)


class AdminUserCreationForm(DjangoAdminUserCreationForm):
    """The Django admin's add-user form, asking for the email too (it signs in with it)."""

    class Meta(DjangoAdminUserCreationForm.Meta):
        model = User
        fields = ("username", "email")


# Groups and limits (the Groups and Users pages) ----------------------------------------------


class GroupForm(forms.Form):
    """A group's name: required, stored without spaces at the ends, unique whatever its case."""

    name = forms.CharField(
        max_length=groups.NAME_MAX_LENGTH,
        error_messages={
            "required": "Give the group a name, e.g. “Research”.",
            "max_length": f"Keep the name to {groups.NAME_MAX_LENGTH} characters or fewer.",
        },
        widget=forms.TextInput(attrs={"placeholder": "e.g. Research", "autocomplete": "off"}),
    )

    def __init__(self, *args, group: Group | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.group = group

    def clean_name(self) -> str:
        return groups.checked_name(self.cleaned_data["name"], other_than=self.group)


class GroupMembersForm(forms.Form):
    members = forms.ModelMultipleChoiceField(
        queryset=User.objects.order_by("email"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"invalid_choice": "Pick members from the list; reload the page and retry."},
    )


def _limit_field(name: str) -> forms.IntegerField:
    model_field = Limits._meta.get_field(name)
    low, high = bounds(model_field)
    message = (
        f"{LIMIT_NAMES[name].capitalize()}: use a whole number from {low:,} to {high:,}, or "
        "leave it blank for no limit."
    )
    return forms.IntegerField(
        label=str(model_field.verbose_name).capitalize(),
        required=False,
        min_value=low,
        max_value=high,
        help_text=model_field.help_text,
        error_messages={"invalid": message, "min_value": message, "max_value": message},
    )


class LimitsForm(forms.Form):
    """The limits of a group or a person's own (`accounts.groups.set_limits`): each blank = no
    limit, bounded as `accounts.models.Limits` says."""

    requests_per_minute = _limit_field("requests_per_minute")
    tokens_per_day = _limit_field("tokens_per_day")
    concurrent_requests = _limit_field("concurrent_requests")

    def limits(self) -> dict[str, int | None]:
        return {name: self.cleaned_data.get(name) for name in LIMIT_FIELDS}


class UserSharingForm(LimitsForm):
    """A person's groups and their own limits, which override their groups' (the Users page)."""

    groups = forms.ModelMultipleChoiceField(
        queryset=Group.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"invalid_choice": "Pick groups from the list; reload the page and retry."},
    )
    field_order = ["groups", *LIMIT_FIELDS]

    def group_names(self) -> list[str]:
        return [group.name for group in self.cleaned_data["groups"]]
