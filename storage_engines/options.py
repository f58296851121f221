"""Engine options: each engine declares its fields in one Django form, used everywhere.

The factory validates a location's stored options with the engine's form, and the
``/superuser`` panel renders the same form, so a field exists in exactly one place.
"""

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from django import forms

from .errors import InvalidOptions


class SecretField(forms.CharField):
    """A write-only text option: stored encrypted, never rendered back, never logged."""

    secret = True
    widget = forms.PasswordInput(render_value=False)


class EndpointURLField(forms.CharField):
    """An http(s) URL whose host may be a single label (``http://minio-us:9000``).

    Django's URLField wants a dotted host name, which refuses service names on private networks.
    """

    def clean(self, value: Any) -> str:
        text = str(super().clean(value) or "").strip()
        if not text:
            return ""
        parsed = urlsplit(text)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise forms.ValidationError("Enter an http:// or https:// URL with a host name.")
        try:
            parsed.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise forms.ValidationError("The port of this URL is not a number.") from None
        return text.rstrip("/")


class EngineOptionsForm(forms.Form):
    """Base class of an engine's options declaration."""

    #: Options that may be omitted and then take the field's ``initial`` value.
    engine_label: ClassVar[str] = ""

    @classmethod
    def secret_names(cls) -> frozenset[str]:
        """Return the names of the options that are secrets."""
        return frozenset(
            name for name, field in cls.base_fields.items() if getattr(field, "secret", False)
        )

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Return every option's default value (``None`` when it has none)."""
        return {name: field.initial for name, field in cls.base_fields.items()}


def options_clean(
    form_class: type[EngineOptionsForm], options: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the validated options with defaults applied, or raise InvalidOptions."""
    unknown = sorted(set(options) - set(form_class.base_fields))
    if unknown:
        raise InvalidOptions(
            f"unknown option(s): {', '.join(unknown)}",
            {name: ["Unknown option."] for name in unknown},
        )
    data = {k: v for k, v in form_class.defaults().items() if v is not None}
    data.update({k: v for k, v in options.items() if v is not None})
    form = form_class(data=data)
    if not form.is_valid():
        errors = {name: [str(m) for m in messages] for name, messages in form.errors.items()}
        summary = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in errors.items())
        raise InvalidOptions(f"invalid options: {summary}", errors)
    return dict(form.cleaned_data)
