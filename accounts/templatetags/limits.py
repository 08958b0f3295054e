"""`{{ group_or_user|limit_summary }}`: the limits set on a group or a person's own, as text."""

from django import template
from django.core.exceptions import ObjectDoesNotExist

from accounts.groups import summary

register = template.Library()


@register.filter
def limit_summary(owner) -> list[str]:
    try:
        row = owner.limits
    except ObjectDoesNotExist:
        row = None
    return summary(row)
