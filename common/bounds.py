"""The bounds a model's integer field allows, read from its validators (and, for a positive
field, its floor of 0), so a form states them in its message without copying them."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


def bounds(field: models.Field) -> tuple[int, int]:
    """(lowest, highest) value `field` accepts."""
    lows = [v.limit_value for v in field.validators if isinstance(v, MinValueValidator)]
    highs = [v.limit_value for v in field.validators if isinstance(v, MaxValueValidator)]
    positive = (
        models.PositiveIntegerField,
        models.PositiveBigIntegerField,
        models.PositiveSmallIntegerField,
    )
    if isinstance(field, positive):
        lows.append(0)
    return max(lows), min(highs)
