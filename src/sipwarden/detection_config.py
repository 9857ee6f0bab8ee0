"""The ``[detect.*]`` and ``[bans]`` configuration sections, made from the settings dataclasses.

Each detector declares its knobs once, as a frozen settings dataclass next to
its code, with a comment on every field saying what it is and why its
default has that value (the sans-IO ``detect`` room cannot depend on
pydantic). This module turns each dataclass into a strict configuration
section: same names, same types, same defaults, the comments as descriptions
(:mod:`sipwarden.settings_docs`), so ``sipwarden config example`` documents
every threshold without a second copy to drift. Sets become sorted arrays in
TOML (a frozenset has no stable order to print).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, create_model

from sipwarden.detect.registry import DETECTOR_NAMES, DetectionSettings
from sipwarden.engine.bans import BanSettings
from sipwarden.errors import ConfigError
from sipwarden.settings_docs import field_docs

__all__ = [
    "BANS_SECTION",
    "DETECT_SECTION",
    "ban_settings",
    "detection_settings",
    "settings_problems",
]

# Knobs that stay in code: an IntEnum has no natural TOML spelling here, and
# the severity policy is part of the engine's contract with its detectors.
_NOT_CONFIGURABLE: Final = frozenset({("BanSettings", "min_severity")})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _config_type(annotation: Any) -> Any:  # noqa: ANN401 - typing objects
    """The configuration type of a settings field type: sets become tuples."""
    if typing.get_origin(annotation) is frozenset:
        (item,) = typing.get_args(annotation)
        return tuple[item, ...]  # type: ignore[valid-type]
    return annotation


def _config_default(value: object) -> object:
    if isinstance(value, frozenset):
        return tuple(sorted(value))
    return value


def _section_model(settings_cls: type, name: str) -> type[BaseModel]:
    hints = typing.get_type_hints(settings_cls)
    docs = field_docs(settings_cls)
    defaults = settings_cls()
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(settings_cls):
        if (settings_cls.__name__, field.name) in _NOT_CONFIGURABLE:
            continue
        description = docs.get(field.name) or f"See {settings_cls.__module__}."
        fields[field.name] = (
            _config_type(hints[field.name]),
            Field(default=_config_default(getattr(defaults, field.name)), description=description),
        )
    doc = inspect.cleandoc(settings_cls.__doc__ or name).split("\n\n")[0]
    return create_model(name, __base__=_Strict, __doc__=doc, **fields)


def _settings_from(model: BaseModel, settings_cls: type) -> Any:  # noqa: ANN401 - a dataclass
    hints = typing.get_type_hints(settings_cls)
    values: dict[str, object] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if typing.get_origin(hints[name]) is frozenset:
            value = frozenset(value)
        values[name] = value
    return settings_cls(**values)


def _settings_classes() -> dict[str, type]:
    hints = typing.get_type_hints(DetectionSettings)
    return {name: hints[name] for name in DETECTOR_NAMES}


def _detect_section() -> type[BaseModel]:
    fields: dict[str, Any] = {
        "enabled": (
            tuple[str, ...],
            Field(
                default=DETECTOR_NAMES,
                description=(
                    "Detectors that run, by name: " + ", ".join(DETECTOR_NAMES) + ". "
                    "All of them by default."
                ),
            ),
        )
    }
    for name, settings_cls in _settings_classes().items():
        model = _section_model(settings_cls, f"{name.title().replace('_', '')}Config")
        fields[name] = (
            model,
            Field(default_factory=model, description=f"The {name} detector's settings."),
        )
    return create_model(
        "DetectConfig",
        __base__=_Strict,
        __doc__=(
            "Detection: which detectors run and their thresholds. Every default is "
            "explained where the detector declares it; the gateway and the monitor run "
            "the same detectors with the same settings."
        ),
        **fields,
    )


DETECT_SECTION: Final[type[BaseModel]] = _detect_section()
BANS_SECTION: Final[type[BaseModel]] = _section_model(BanSettings, "BansConfig")
BANS_SECTION.__doc__ = (
    "Bans: which events earn one, for how long, and who is never banned. A source that "
    "never proved it receives replies (plain UDP, no answered challenge) may be spoofed "
    "and only earns the short ban; repeat offenders get the escalating durations."
)


def detection_settings(section: BaseModel) -> DetectionSettings:
    """The engine's detection settings from a validated ``[detect]`` section.

    Raises:
        ConfigError: a value the detector's own rules refuse, named by its dotted key.
    """
    values: dict[str, object] = {"enabled": tuple(getattr(section, "enabled"))}  # noqa: B009
    for name, settings_cls in _settings_classes().items():
        values[name] = _built(getattr(section, name), settings_cls, f"detect.{name}")
    return DetectionSettings(**values)  # type: ignore[arg-type]


def ban_settings(section: BaseModel) -> BanSettings:
    """The engine's ban policy settings from a validated ``[bans]`` section."""
    settings: BanSettings = _built(section, BanSettings, "bans")
    return settings


def settings_problems(detect: BaseModel, bans: BaseModel) -> list[tuple[str, str]]:
    """Every value of ``[detect.*]`` and ``[bans]`` that the settings' own rules refuse
    (ranges, one field against another), as (dotted key, message): the configuration
    is checked whole when it is read, not when a detector is first built."""
    sections: list[tuple[BaseModel, type, str]] = [
        (getattr(detect, name), settings_cls, f"detect.{name}")
        for name, settings_cls in _settings_classes().items()
    ]
    sections.append((bans, BanSettings, "bans"))
    problems = []
    for model, settings_cls, path in sections:
        try:
            _built(model, settings_cls, path)
        except ConfigError as error:
            problems.append((error.key_path, error.reason))
    return problems


def _built(model: BaseModel, settings_cls: type, path: str) -> Any:  # noqa: ANN401 - a dataclass
    try:
        return _settings_from(model, settings_cls)
    except ConfigError as error:
        key = f"{path}.{error.key_path}" if error.key_path else path
        raise ConfigError(error.reason, key_path=key) from None
    except ValueError as error:  # a rule without a key of its own: the section's
        raise ConfigError(str(error), key_path=path) from None
