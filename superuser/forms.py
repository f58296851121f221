"""Forms of the panel: they parse what was typed; ``replication.config`` decides what is valid.

A storage card carries, for every engine kind, that engine's own options form (prefixed
``<card>-<kind>``) so that switching the "Storage Engine" select shows the right fields and
nothing an engine declares is ever dropped. Only the selected kind's values are used.
"""

from dataclasses import dataclass
from typing import Any, cast

from django import forms
from django.forms.fields import InvalidJSONInput
from django.forms.formsets import TOTAL_FORM_COUNT
from django.forms.utils import ErrorDict

from replication.config import CARD, LocationSpec, SaveResult, StorageConfig
from replication.models import EngineKind, ServeMode
from storage_engines.options import EngineOptionsForm
from storage_engines.registry import CONFIGURABLE_KINDS, engine_class

KIND_LABELS = dict(EngineKind.choices)
CLEAR_SUFFIX = "__clear"
#: Most storage cards one page may hold; more is refused before any card is built.
CARDS_MAX = 100


def whole_number(raw: Any) -> int | None:
    """Return ``raw`` as an int if it is ASCII digits, else None (``"²".isdigit()`` is true)."""
    text = str(raw or "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


_WORDS = {
    "url": "URL",
    "mb": "MiB",
    "gb": "GB",
    "os": "OS",
    "ca": "CA",
    "s3": "S3",
    "id": "ID",
    "json": "JSON",
    "api": "API",
    "aws": "AWS",
}


def option_label(name: str) -> str:
    """Return a readable label for an option without one (``s3_access_key`` → S3 access key)."""
    words = [_WORDS.get(word, word) for word in name.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def kinds_offered(existing_kinds: set[str]) -> list[str]:
    """Return the engine kinds a card may choose: the configurable ones, plus any kind in use."""
    return list(CONFIGURABLE_KINDS) + sorted(existing_kinds - set(CONFIGURABLE_KINDS))


_UNVALIDATED: dict[type[EngineOptionsForm], type[EngineOptionsForm]] = {}


def _unvalidated(form_class: type[EngineOptionsForm]) -> type[EngineOptionsForm]:
    """Return a subclass that leaves validation to replication.config, whose errors it shows."""

    def full_clean(self: Any) -> None:
        self._errors = ErrorDict()
        self.cleaned_data = {}

    if form_class not in _UNVALIDATED:
        _UNVALIDATED[form_class] = type(
            form_class.__name__, (form_class,), {"full_clean": full_clean}
        )
    return _UNVALIDATED[form_class]


class StorageSettingsForm(forms.Form):
    storage_replication_enabled = forms.BooleanField(
        required=False,
        label="Enable Storage Replication",
        help_text="Copy blobs to other locations in the background (not to local storage).",
    )
    config_version = forms.IntegerField(required=False, widget=forms.HiddenInput)
    use_required_attribute = False


@dataclass
class EngineField:
    """One option of an engine, as a card shows it."""

    bound: forms.BoundField
    secret: bool
    stored: bool  # a secret value is stored for this location (and this kind)
    clear_name: str
    checkbox: bool


@dataclass
class EngineGroup:
    """The fields of one engine kind inside a card."""

    kind: str
    label: str
    form: EngineOptionsForm
    fields: list[EngineField]


class LocationCardForm(forms.Form):
    """One storage location: its identity, its engine and the engine's options."""

    location_pk = forms.IntegerField(required=False, widget=forms.HiddenInput)
    location_id = forms.CharField(
        required=False,
        label="Location ID",
        max_length=64,
        help_text="Letters, digits, '_' and '-'. Renaming keeps what the location holds.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    kind = forms.ChoiceField(label="Storage Engine")
    replicate_by_default = forms.BooleanField(
        required=False, label="Replicate to storage engine by default"
    )
    serve_mode = forms.ChoiceField(label="Serve pulls", choices=ServeMode.choices)
    use_required_attribute = False

    def __init__(
        self,
        *args: Any,
        kinds: list[str],
        stored: dict[int, tuple[str, frozenset[str]]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        kind_field = cast(forms.ChoiceField, self.fields["kind"])
        kind_field.choices = [(kind, KIND_LABELS.get(kind, kind)) for kind in kinds]
        pk = self._value("location_pk")
        self.stored_kind, self.secrets_stored = (
            stored.get(pk, ("", frozenset())) if pk else ("", frozenset())
        )
        self.engine_groups = [self._engine_group(kind) for kind in kinds]

    def _value(self, name: str) -> Any:
        if self.is_bound:
            raw = self.data.get(self.add_prefix(name))
            return whole_number(raw) if name == "location_pk" else raw
        return self.initial.get(name)

    @property
    def selected_kind(self) -> str:
        return str(self._value("kind") or self.fields["kind"].initial or CONFIGURABLE_KINDS[0])

    def _engine_group(self, kind: str) -> EngineGroup:
        form_class = engine_class(kind).options_form
        prefix = f"{self.prefix}-{kind}"
        if self.is_bound:
            form = _unvalidated(form_class)(data=self.data, prefix=prefix)
        else:
            initial = self.initial.get("options", {}) if self.initial.get("kind") == kind else {}
            form = form_class(initial=initial, prefix=prefix)
        form.use_required_attribute = False
        for name, field in form.fields.items():
            if field.label is None:
                field.label = option_label(name)
            if isinstance(field, forms.JSONField):
                field.widget.attrs["rows"] = 3
                if not form.is_bound and form.initial.get(name) is None:
                    form.initial[name] = InvalidJSONInput("")  # an empty box, not "null"
        secrets = form_class.secret_names()
        fields = [
            EngineField(
                bound=form[name],
                secret=name in secrets,
                stored=name in secrets and kind == self.stored_kind and name in self.secrets_stored,
                clear_name=f"{form.add_prefix(name)}{CLEAR_SUFFIX}",
                checkbox=isinstance(field, forms.BooleanField),
            )
            for name, field in form.fields.items()
        ]
        return EngineGroup(kind, KIND_LABELS.get(kind, form_class.engine_label), form, fields)

    def engine_group(self, kind: str) -> EngineGroup:
        return next(group for group in self.engine_groups if group.kind == kind)

    def spec(self) -> LocationSpec:
        """Return the location this card describes (call after the formset validated)."""
        data = self.cleaned_data
        kind = str(data.get("kind") or "")
        options: dict[str, Any] = {}
        clear: set[str] = set()
        if kind in {group.kind for group in self.engine_groups}:
            group = self.engine_group(kind)
            for name, field in group.form.fields.items():
                key = group.form.add_prefix(name)
                options[name] = field.widget.value_from_datadict(self.data, self.files, key)
                if f"{key}{CLEAR_SUFFIX}" in self.data:
                    clear.add(name)
        return LocationSpec(
            location_id=str(data.get("location_id") or ""),
            kind=kind,
            options=options,
            replicate_by_default=bool(data.get("replicate_by_default")),
            serve_mode=str(data.get("serve_mode") or ServeMode.REDIRECT),
            pk=data.get("location_pk"),
            delete=bool(data.get("DELETE")),
            secrets_clear=frozenset(clear),
        )

    def errors_add(self, name: str, messages: list[str]) -> None:
        """Show the service's messages on the card field, engine option or card they name."""
        if name in self.fields and name not in ("location_pk", "ORDER", "DELETE"):
            self.add_error(name, messages)
            return
        group = self.engine_group(self.selected_kind) if self.selected_kind in self.kinds else None
        if group is not None and name in group.form.fields:
            group.form.add_error(name, messages)
        elif name == CARD:
            self.add_error(None, messages)
        else:
            self.add_error(None, [f"{name}: {message}" for message in messages])

    @property
    def has_errors(self) -> bool:
        return bool(self.errors) or any(group.form.errors for group in self.engine_groups)

    @property
    def kinds(self) -> list[str]:
        return [group.kind for group in self.engine_groups]


class BaseLocationFormSet(forms.BaseFormSet):
    def total_form_count(self) -> int:
        """Return 0 for a page that claims more than CARDS_MAX cards: none is built."""
        if self.is_bound:  # unbound, management_form asks total_form_count
            form = self.management_form
            claimed: int = form.cleaned_data.get(TOTAL_FORM_COUNT) or 0 if form.is_valid() else 0
            if claimed > CARDS_MAX:
                return 0
        return int(super().total_form_count())


LocationFormSet = forms.formset_factory(
    LocationCardForm,
    formset=BaseLocationFormSet,
    extra=0,
    can_order=True,
    can_delete=True,
    max_num=CARDS_MAX,
    validate_max=True,
    absolute_max=CARDS_MAX,
)


def cards_ordered(formset: Any) -> list[LocationCardForm]:
    """Return the cards in preference order: by their order field, then as they came."""

    def position(item: tuple[int, LocationCardForm]) -> tuple[float, int]:
        index, card = item
        raw = card["ORDER"].value()
        try:
            return (float(raw), index)
        except (TypeError, ValueError):
            return (float("inf"), index)

    return [card for _, card in sorted(enumerate(formset.forms), key=position)]


def config_from_forms(
    settings_form: StorageSettingsForm, formset: Any
) -> tuple[StorageConfig, list[LocationCardForm]]:
    """Return the configuration the forms describe and the card of each of its locations."""
    cards = [
        card
        for card in cards_ordered(formset)
        if not (card.cleaned_data.get("DELETE") and not card.cleaned_data.get("location_pk"))
    ]
    config = StorageConfig(
        replication_enabled=bool(settings_form.cleaned_data.get("storage_replication_enabled")),
        locations=[card.spec() for card in cards],
        version=settings_form.cleaned_data.get("config_version"),
    )
    return config, cards


def errors_attach(result: SaveResult, cards: list[LocationCardForm]) -> None:
    """Show every error of a refused save on the card and field it belongs to."""
    for index, fields in result.errors.items():
        for name, messages in fields.items():
            cards[index].errors_add(name, messages)


def initial_cards(config: StorageConfig) -> list[dict[str, Any]]:
    """Return the initial data of one card per stored location."""
    return [
        {
            "location_pk": spec.pk,
            "location_id": spec.location_id,
            "kind": spec.kind,
            "options": spec.options,
            "replicate_by_default": spec.replicate_by_default,
            "serve_mode": spec.serve_mode,
            "ORDER": position,
        }
        for position, spec in enumerate(config.locations, start=1)
    ]


class NamespaceTargetsForm(forms.Form):
    locations = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    next = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, location_ids: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = cast(forms.MultipleChoiceField, self.fields["locations"])
        field.choices = [(lid, lid) for lid in location_ids]
