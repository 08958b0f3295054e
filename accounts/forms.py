from django import forms
from django.contrib.auth.forms import AdminUserCreationForm as DjangoAdminUserCreationForm
from django.contrib.auth.forms import UserChangeForm
from django.core.exceptions import ValidationError

from accounts import approval
from accounts.models import ApiKey, User


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


class AdminUserCreationForm(DjangoAdminUserCreationForm):
    """The Django admin's add-user form, asking for the email too (it signs in with it)."""

    class Meta(DjangoAdminUserCreationForm.Meta):
        model = User
        fields = ("username", "email")
