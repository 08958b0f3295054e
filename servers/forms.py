"""The server profile form: every field validated, with messages that say what to do."""

from __future__ import annotations

import json

from django import forms
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.utils.text import slugify

from common.bounds import bounds
from models_catalog.models import Host
from models_catalog.validators import validate_repo_id
from servers.models import CHAT_ENGINES, Engine, ServerProfile
from servers.serving import model_engine, model_engines
from servers.supervision import ports
from servers.validation import (
    KV_BITS_CHOICES,
    RANGES,
    RESERVED_SLUGS,
    check_chat_template_args,
    profile_defaults,
    range_error,
    resolve_adapter_path,
)

# What the form shows first; the rest is under "Advanced" (templates/servers/form.html).
BASIC_FIELDS = frozenset(
    {
        "model_id",
        "engine",
        "name",
        "temperature",
        "max_tokens",
        "max_tokens_cap",
        "idle_timeout_minutes",
    }
)

# The options of a chat server (the text and vision engines). An embeddings or
# speech-to-text profile takes none of them (servers/supervision/command.build_engine_command):
# the form hides them for those engines (static/js/profile_form.js; `hidden` when it renders).
CHAT_ONLY_FIELDS = frozenset(
    {"system_prompt", "temperature", "top_p", "top_k", "min_p", "max_tokens", "max_tokens_cap",
     "chat_template_args", "draft_model_id", "num_draft_tokens", "prompt_cache_size",
     "decode_concurrency", "prompt_concurrency", "kv_bits", "adapter_path", "trust_remote_code"}
)  # fmt: skip
# Of those, the ones only mlx_lm.server takes (the text engine): mlx_vlm.server has no
# chat-template args, draft model, prompt-cache size or prompt concurrency
# (servers/supervision/command.build_vision_command). Marked data-text-only, hidden for vision.
TEXT_ONLY_FIELDS = frozenset(
    {"chat_template_args", "draft_model_id", "num_draft_tokens", "prompt_cache_size",
     "prompt_concurrency"}
)  # fmt: skip

# The fair queue's fields (servers/sharing), bounded by the model's validators; what a blank
# means where it may be blank.
SHARING_FIELDS = {
    "max_in_flight": "or leave it blank for the decode concurrency",
    "reserved_slots": "",
    "queue_length": "",
    "queue_wait_seconds": "",
}


class ServerProfileForm(forms.ModelForm):
    # Only an admin sees and sets it, when editing (a new profile is open to everyone until an
    # admin limits it); a member's form keeps the profile's groups whatever is posted.
    allowed_groups = forms.ModelMultipleChoiceField(
        queryset=Group.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Who may use it",
        help_text=ServerProfile._meta.get_field("allowed_groups").help_text,
        error_messages={"invalid_choice": "Pick groups from the list; reload the page and retry."},
    )

    chat_template_args = forms.CharField(
        label="Chat-template args",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": '{"enable_thinking": false}'}),
        help_text='A JSON object passed to the chat template, e.g. {"enable_thinking": false}.',
    )
    kv_bits = forms.TypedChoiceField(
        label="KV-cache bits",
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", "Full precision")] + [(b, f"{b} bits") for b in KV_BITS_CHOICES],
        help_text="Quantize the KV cache to save memory on long contexts (disables batching).",
    )

    class Meta:
        model = ServerProfile
        fields = [
            "name", "slug", "model_id", "engine", "host", "port", "description", "system_prompt",
            "temperature", "top_p", "top_k", "min_p", "max_tokens", "max_tokens_cap",
            "chat_template_args",
            "draft_model_id", "num_draft_tokens", "prompt_cache_size", "decode_concurrency",
            "prompt_concurrency", "kv_bits", "adapter_path", "trust_remote_code",
            "auto_start", "idle_timeout_minutes", "allow_on_demand",
            "max_in_flight", "reserved_slots", "queue_length", "queue_wait_seconds",
        ]  # fmt: skip
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "system_prompt": forms.Textarea(attrs={"rows": 3}),
        }
        help_texts = {
            "slug": "Used in URLs and as the `model` name in API calls. Leave empty to derive it "
            "from the name.",
            "port": "The server listens on 127.0.0.1 only; users reach it through the portal.",
            "draft_model_id": "A small model of the same family for speculative decoding.",
            "adapter_path": "A LoRA adapter directory inside the allowed adapter directories.",
            "trust_remote_code": "Runs code shipped with the tokenizer. Only admins can turn "
            "it on.",
            "auto_start": "Start when the host's worker starts.",
            "idle_timeout_minutes": "Stop after this many minutes without requests (so nobody "
            "has to stop a colleague's server); 0 = never.",
            "max_tokens": "The reply length a request gets when it asks for none.",
            "allow_on_demand": "Let an API call or the chat start it when it is not running.",
        }

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["slug"].required = False
        Host.objects.this_machine()  # this machine is always a choice (its row, never facts)
        hosts = list(Host.objects.order_by("name"))
        # Models per host: this machine's cache, or what another host's worker reported.
        self.host_model_ids = {h.pk: set(h.model_ids()) for h in hosts}
        local = sorted(set().union(*self.host_model_ids.values()), key=str.lower)
        with_models = [h for h in hosts if self.host_model_ids[h.pk]]
        if len(with_models) > 1:
            choices = [
                (f"On {h.name}", [(r, r) for r in sorted(self.host_model_ids[h.pk], key=str.lower)])
                for h in with_models
            ]
        else:
            choices = [(repo_id, repo_id) for repo_id in local]
        current = self.instance.model_id if self.instance.pk else ""
        if current and current not in local:
            choices.insert(0, (current, f"{current} (not on this host's disk)"))
        self.local_model_ids = set(local)
        self.fields["model_id"] = forms.ChoiceField(
            label="Model",
            choices=[("", "Choose a model from My models"), *choices],
            help_text="Models on the chosen host's disk (as its worker reports them). Download "
            "more from the catalog.",
            error_messages={
                "invalid_choice": "%(value)s is not on this host's disk: pick one of My models "
                "or download it first."
            },
        )
        draft_current = self.instance.draft_model_id if self.instance.pk else ""
        draft_choices = [("", "None"), *choices]
        if draft_current and draft_current not in local:
            draft_choices.insert(1, (draft_current, f"{draft_current} (not on disk)"))
        self.fields["draft_model_id"] = forms.ChoiceField(
            label="Draft model",
            required=False,
            choices=draft_choices,
            help_text=self._meta.help_texts["draft_model_id"],
            error_messages={
                "invalid_choice": "%(value)s is not on this host's disk: pick one of My models."
            },
        )
        # Blank: the profile's engine, or for a new profile the one that fits its model.
        self.fields["engine"].required = False
        self.fields["engine"].choices = [("", "The model's own (detected)"), *Engine.choices]
        self.fields["host"].empty_label = None
        # The engine that fits each model on this machine's disk (servers.serving.model_engine):
        # picking a model picks it (static/js/profile_form.js), as for a new profile's initial.
        this_machine = Host.objects.this_machine()
        self.model_engines = model_engines(
            sorted(self.host_model_ids.get(this_machine.pk, ())), this_machine
        )
        if not self.is_bound and not self.instance.pk and "engine" not in self.initial:
            model = self.initial.get("model_id")
            if model in self.model_engines:
                self.initial["engine"] = self.model_engines[model]
        self.fields["engine"].help_text = (
            "What serves the model: text chat (mlx-lm), chat with images (mlx-vlm), embeddings "
            "or speech to text. Choosing a model picks the one that fits it."
        )
        if not self.instance.pk:
            self.fields["host"].initial = Host.objects.this_machine().pk
            if not self.is_bound and not self.initial.get("port"):
                self.initial["port"] = self.suggested_port()
            if not self.is_bound and "temperature" not in self.initial:
                # A new profile's sampling as for a model without generation_config.json
                # (Serve reads the model's own: servers/serving.py).
                for name, value in profile_defaults(None, None).items():
                    self.initial.setdefault(name, value)
        if self.instance.pk and isinstance(self.instance.chat_template_args, dict):
            self.initial["chat_template_args"] = (
                json.dumps(self.instance.chat_template_args)
                if self.instance.chat_template_args
                else ""
            )
        elif isinstance(self.initial.get("chat_template_args"), dict):
            args = self.initial["chat_template_args"]
            self.initial["chat_template_args"] = json.dumps(args) if args else ""
        for name, (low, high, meaning) in RANGES.items():
            field = self.fields[name]
            field.widget.attrs.update({"min": low, "max": high})
            if isinstance(field, forms.FloatField):
                field.widget.attrs["step"] = "0.01"
            if not field.help_text:
                field.help_text = f"{low:g} to {high:g}: {meaning}."
        self._bound_sharing_fields()
        if user is not None and user.is_admin:
            if self.instance.pk:
                self.initial["allowed_groups"] = list(self.instance.allowed_groups.order_by("name"))
        else:
            del self.fields["allowed_groups"]
        if user is not None and not user.is_admin:
            # A member may turn it off (their profile, turned on by an admin), never on.
            if self.instance.pk and self.instance.trust_remote_code:
                self.fields["trust_remote_code"].help_text = (
                    "Runs code shipped with the tokenizer. An admin turned it on; you may turn "
                    "it off, and only an admin can turn it on again."
                )
            else:
                self.fields["trust_remote_code"].disabled = True

    def _bound_sharing_fields(self) -> None:
        """The fair queue's fields with the model's bounds and one message saying them."""
        for name, blank in SHARING_FIELDS.items():
            old = self.fields[name]
            low, high = bounds(ServerProfile._meta.get_field(name))
            message = f"{old.label}: use a whole number from {low:,} to {high:,}"
            message += f", {blank}." if blank else "."
            self.fields[name] = forms.IntegerField(
                label=old.label,
                required=old.required,
                initial=old.initial,
                help_text=old.help_text,
                min_value=low,
                max_value=high,
                error_messages={"invalid": message, "min_value": message, "max_value": message},
            )

    def _save_m2m(self) -> None:
        super()._save_m2m()
        if "allowed_groups" in self.fields:
            self.instance.allowed_groups.set(self.cleaned_data["allowed_groups"])

    chat_only_fields = CHAT_ONLY_FIELDS
    text_only_fields = TEXT_ONLY_FIELDS

    @property
    def shown_engine(self) -> str:
        """The engine the form shows (posted, or the profile's); left blank on a new profile,
        the one that fits its model (`model_engines`), else text."""
        engine = self.data.get("engine") if self.is_bound else None
        engine = engine or self.initial.get("engine")
        if not engine and not self.instance.pk:
            model = self.data.get("model_id") if self.is_bound else self.initial.get("model_id")
            engine = self.model_engines.get(model or "")
        return engine or self.instance.engine

    @property
    def chats(self) -> bool:
        """Whether the engine shown is a chat server's (CHAT_ENGINES): its options are shown."""
        return self.shown_engine in CHAT_ENGINES

    @property
    def hidden_fields(self) -> frozenset[str]:
        """The options the engine shown does not take, rendered `hidden`
        (templates/servers/_field.html; static/js/profile_form.js keeps them so)."""
        engine = self.shown_engine
        if engine not in CHAT_ENGINES:
            return CHAT_ONLY_FIELDS
        if engine == Engine.TEXT:
            return frozenset()
        return TEXT_ONLY_FIELDS - set(self.errors)  # a vision profile's draft model: refused

    @property
    def advanced_has_errors(self) -> bool:
        """Whether a field under "Advanced" has an error (the section then opens)."""
        return any(name not in BASIC_FIELDS for name in self.errors if name != "__all__")

    def clean_allowed_groups(self) -> list[Group]:
        return sorted(self.cleaned_data["allowed_groups"], key=lambda group: group.name)

    def suggested_port(self) -> int | None:
        host = Host.objects.this_machine()
        taken = set(ServerProfile.objects.filter(host=host).values_list("port", flat=True))
        try:
            return ports.suggest_port(taken)
        except LookupError:
            return None

    # --- field rules ----------------------------------------------------------------------

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise ValidationError("Give the profile a name, e.g. “Qwen3 4B chat”.")
        return name

    def clean_slug(self) -> str:
        slug = self.cleaned_data.get("slug") or slugify(self.data.get("name", ""))[:80]
        if not slug:
            raise ValidationError(
                "Give a slug (letters, digits, '-' or '_'): the name has none to derive it from."
            )
        if slug in RESERVED_SLUGS:
            raise ValidationError(f"“{slug}” is reserved by the portal; choose another slug.")
        clash = ServerProfile.objects.filter(slug=slug).exclude(pk=self.instance.pk)
        if clash.exists():
            raise ValidationError(f"The slug “{slug}” is taken by another profile; choose another.")
        return slug

    def clean_model_id(self) -> str:
        value = self.cleaned_data["model_id"]
        validate_repo_id(value)
        unchanged = self.instance.pk and value == self.instance.model_id
        if value not in self.local_model_ids and not unchanged:
            raise ValidationError(
                f"{value} is not on this host's disk: pick one of My models or download it."
            )
        return value

    def clean_draft_model_id(self) -> str:
        value = self.cleaned_data.get("draft_model_id") or ""
        if not value:
            return ""
        validate_repo_id(value)
        unchanged = self.instance.pk and value == self.instance.draft_model_id
        if value not in self.local_model_ids and not unchanged:
            raise ValidationError(f"The draft model {value} is not on this host's disk.")
        return value

    def clean_chat_template_args(self) -> dict:
        try:
            return check_chat_template_args(self.cleaned_data.get("chat_template_args") or "")
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def clean_engine(self) -> str:
        """Blank: the profile's engine; for a new profile, the one that fits its model on its
        host (set in `clean`, which knows the host)."""
        engine = self.cleaned_data.get("engine") or ""
        return engine or (self.instance.engine if self.instance.pk else "")

    def clean_adapter_path(self) -> str:
        value = (self.cleaned_data.get("adapter_path") or "").strip()
        if not value:
            return ""
        try:
            return str(resolve_adapter_path(value))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def clean_trust_remote_code(self) -> bool:
        value = self.cleaned_data.get("trust_remote_code", False)
        already_on = bool(self.instance.pk and self.instance.trust_remote_code)
        if value and self.user is not None and not self.user.is_admin and not already_on:
            raise ValidationError("Only an admin can turn on trust-remote-code.")
        return value

    def clean(self) -> dict:
        data = super().clean()
        if not data.get("engine"):  # a new profile's blank engine: the one that fits its model
            model, host = data.get("model_id"), data.get("host")
            data["engine"] = model_engine(model, host) if model and host else Engine.TEXT
        for name in RANGES:
            value = data.get(name)
            if value is not None and (message := range_error(name, value)):
                self.add_error(name, message)
        cap, max_tokens = data.get("max_tokens_cap"), data.get("max_tokens")
        if cap and max_tokens and max_tokens > cap and "max_tokens" not in self.errors:
            self.add_error(
                "max_tokens",
                f"The default reply length ({max_tokens:,}) must not exceed what a request may "
                f"ask for ({cap:,}): lower it, or raise the cap.",
            )
        draft = data.get("draft_model_id")
        engine = data.get("engine")
        if draft and engine and engine != Engine.TEXT:
            self.add_error(
                "draft_model_id",
                "A draft model is for text profiles (mlx-lm) only: choose None, or the text "
                "engine.",
            )
        if draft and draft == data.get("model_id"):
            self.add_error("draft_model_id", "The draft model must differ from the model.")
        if data.get("kv_bits") and draft:
            self.add_error(
                "kv_bits", "mlx_lm.server cannot quantize the KV cache with a draft model."
            )
        self._clean_port(data)
        self._clean_models_on_host(data)
        if data.get("engine") and data["engine"] not in CHAT_ENGINES:
            # Options the engine does not take are hidden: their errors would be unfixable.
            for name in CHAT_ONLY_FIELDS & set(self.errors):
                del self.errors[name]
        return data

    def _clean_models_on_host(self, data: dict) -> None:
        """The model and draft model must be on the chosen host's disk."""
        host = data.get("host")
        if host is None:
            return
        on_host = self.host_model_ids.get(host.pk, set())
        same_host = bool(self.instance.pk and self.instance.host_id == host.pk)
        for name, what in (("model_id", "The model"), ("draft_model_id", "The draft model")):
            value = data.get(name)
            unchanged = same_host and value == getattr(self.instance, name)
            if value and value not in on_host and not unchanged and name not in self.errors:
                self.add_error(
                    name,
                    f"{what} {value} is not on host {host.name}'s disk (as its worker last "
                    f"reported): pick a model listed under {host.name}, or download it there "
                    "first.",
                )

    def _clean_port(self, data: dict) -> None:
        port, host = data.get("port"), data.get("host")
        if port is None or host is None or "port" in self.errors:
            return
        clash = (
            ServerProfile.objects.filter(host=host, port=port).exclude(pk=self.instance.pk).first()
        )
        if clash is not None:
            self.add_error(
                "port",
                f"Port {port} is already used by the profile “{clash.name}” on {host.name}; "
                f"try {self._free_port_hint(host)}.",
            )
            return
        if host.name != Host.objects.this_machine().name:
            return  # another machine's ports are checked by its worker at start
        own_server = (
            self.instance.pk
            and self.instance.port == port
            and getattr(getattr(self.instance, "instance", None), "is_active", False)
        )
        if not own_server and not ports.port_is_free(port):
            holder = ports.port_holder(port)
            by = f" by {holder}" if holder else ""
            self.add_error(
                "port",
                f"Port {port} is in use on this host{by}; try {self._free_port_hint(host)}.",
            )

    def _free_port_hint(self, host: Host) -> str:
        taken = set(
            ServerProfile.objects.filter(host=host)
            .exclude(pk=self.instance.pk)
            .values_list("port", flat=True)
        )
        try:
            return str(
                ports.suggest_port(taken, check_os=host.name == Host.objects.this_machine().name)
            )
        except LookupError:
            return "another port"


class HostPlanForm(forms.ModelForm):
    """A host's memory plan as an admin sets it on the Hosts page (servers/memory_plan.py)."""

    class Meta:
        model = Host
        fields = ["memory_policy", "evict_idle_minutes", "memory_cap_mb"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["evict_idle_minutes"].widget.attrs.update({"min": 0, "max": 10080})
        self.fields["memory_cap_mb"].widget.attrs.update({"min": 1})

    def clean_evict_idle_minutes(self) -> int:
        value = self.cleaned_data["evict_idle_minutes"]
        if value > 10080:
            raise ValidationError("Use a whole number of minutes from 0 to 10,080 (a week).")
        return value

    def clean_memory_cap_mb(self) -> int | None:
        value = self.cleaned_data.get("memory_cap_mb")
        if value is not None and not 1 <= value <= 1_048_576 * 16:
            raise ValidationError("Give the cap in MB (e.g. 49152 for 48 GB), or leave it blank.")
        return value
