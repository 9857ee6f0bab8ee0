"""The [detect.*] and [bans] sections: made from the settings dataclasses, strict, documented."""

from __future__ import annotations

import dataclasses

import pytest

from sipwarden.config import Config, parse_config, render_example_config
from sipwarden.detect.canary import CanarySettings
from sipwarden.detect.registry import DETECTOR_NAMES, DetectionSettings
from sipwarden.detection_config import ban_settings, detection_settings
from sipwarden.engine.bans import BanSettings
from sipwarden.errors import ConfigError


def test_defaults_are_the_detectors_own() -> None:
    config = Config()
    assert detection_settings(config.detect) == DetectionSettings()
    assert ban_settings(config.bans) == BanSettings()


def test_every_detector_field_is_configurable_and_documented() -> None:
    example = render_example_config()
    for name in DETECTOR_NAMES:
        assert f"[detect.{name}]" in example
    for field in dataclasses.fields(CanarySettings):
        assert f"\n{field.name} = " in example.split("\n[detect.canary]\n")[1]


def test_thresholds_reach_the_detectors() -> None:
    config = parse_config(
        '[detect]\nenabled = ["canary", "flood"]\n'
        '[detect.canary]\nextensions = ["999", "998"]\n'
        '[detect.flood]\nmethod_limits = [["INVITE", 5]]\n'
        '[bans]\nallowlist = ["192.0.2.0/24"]\nunproven_duration = 30.0\n'
    )
    detection = detection_settings(config.detect)
    assert detection.enabled == ("canary", "flood")
    assert detection.canary.extensions == frozenset({"999", "998"})
    assert detection.flood.method_limits == (("INVITE", 5),)
    bans = ban_settings(config.bans)
    assert bans.allowlist == ("192.0.2.0/24",)
    assert bans.unproven_duration == 30.0


def test_a_typo_in_a_detector_section_names_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[detect.flood]\nsource_limt = 10\n", file="sipwarden.toml")
    assert "detect.flood.source_limt" in str(caught.value)


def test_a_wrong_type_names_the_key_and_what_was_expected() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config('[detect.cracking]\nfailures_threshold = "ten"\n')
    assert "detect.cracking.failures_threshold" in str(caught.value)


def test_a_value_the_detector_refuses_is_reported_when_the_file_is_read() -> None:
    """The detectors' own rules (ranges, one field against another) are checked with the
    rest of the file, named by their dotted keys, every section's problem at once."""
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "[detect.cracking]\nfailures_threshold = 0\n"
            "[detect.out_of_state]\nthreshold = 20\nhigh_threshold = 10\n"
            '[detect.flood]\nmethod_limits = [["", 3]]\n'
        )
    message = str(caught.value)
    assert "3 problems" in message
    assert "detect.cracking.failures_threshold: must be at least 1, not 0" in message
    assert "detect.out_of_state.high_threshold: must not be below threshold (20)" in message
    assert "detect.flood.method_limits: a method name cannot be empty" in message


def test_settings_built_from_a_section_name_the_whole_key() -> None:
    config = parse_config("")
    section = getattr(config.detect, "enumeration").model_copy(update={"threshold": 0})  # noqa: B009 - a section mypy sees as untyped
    with pytest.raises(ConfigError, match=r"detect\.enumeration\.threshold: must be at least 1"):
        detection_settings(config.detect.model_copy(update={"enumeration": section}))
