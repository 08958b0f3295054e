from allauth.account.adapter import DefaultAccountAdapter

from accounts import approval


class AccountAdapter(DefaultAccountAdapter):
    """Sign-ups go through `approval.register`: the first user becomes the admin, everyone
    after waits for approval (the access middleware shows them the waiting page)."""

    def save_user(self, request, user, form, commit=True):
        user = super().save_user(request, user, form, commit=False)
        if commit:
            approval.register(user)
        return user
