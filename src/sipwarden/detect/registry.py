"""The detector set: every detector with its settings, and the engine built from them.

The gateway and the monitor both call :func:`build_engine`, so they run the
same detectors with the same settings (DESIGN: one engine for both modes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipwarden.engine.bans import BanSettings
from sipwarden.engine.engine import Detector, Engine

from .canary import CanaryDetector, CanarySettings
from .cracking import CrackingDetector, CrackingSettings
from .enumeration import EnumerationDetector, EnumerationSettings
from .flood import FloodDetector, FloodSettings
from .malformed import MalformedDetector, MalformedSettings
from .out_of_state import OutOfStateDetector, OutOfStateSettings
from .scanner import ScannerDetector, ScannerSettings
from .sessions import SessionLimitDetector, SessionSettings

__all__ = ["DETECTOR_NAMES", "DetectionSettings", "build_detectors", "build_engine"]

DETECTOR_NAMES = (
    "scanner",
    "enumeration",
    "cracking",
    "flood",
    "out_of_state",
    "malformed",
    "canary",
    "session_limit",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionSettings:
    """Every detector's settings, and which detectors run (all by default)."""

    enabled: tuple[str, ...] = DETECTOR_NAMES
    scanner: ScannerSettings = field(default_factory=ScannerSettings)
    enumeration: EnumerationSettings = field(default_factory=EnumerationSettings)
    cracking: CrackingSettings = field(default_factory=CrackingSettings)
    flood: FloodSettings = field(default_factory=FloodSettings)
    out_of_state: OutOfStateSettings = field(default_factory=OutOfStateSettings)
    malformed: MalformedSettings = field(default_factory=MalformedSettings)
    canary: CanarySettings = field(default_factory=CanarySettings)
    session_limit: SessionSettings = field(default_factory=SessionSettings)


def build_detectors(settings: DetectionSettings) -> list[Detector]:
    """The enabled detectors, in the order of :data:`DETECTOR_NAMES`."""
    unknown = set(settings.enabled) - set(DETECTOR_NAMES)
    if unknown:
        raise ValueError(f"unknown detectors: {', '.join(sorted(unknown))}")
    factories: dict[str, Detector] = {}
    for name in settings.enabled:
        factories[name] = _build(name, settings)
    return [factories[name] for name in DETECTOR_NAMES if name in factories]


def _build(name: str, settings: DetectionSettings) -> Detector:
    detector: Detector
    match name:
        case "scanner":
            detector = ScannerDetector(settings.scanner)
        case "enumeration":
            detector = EnumerationDetector(settings.enumeration)
        case "cracking":
            detector = CrackingDetector(settings.cracking)
        case "flood":
            detector = FloodDetector(settings.flood)
        case "out_of_state":
            detector = OutOfStateDetector(settings.out_of_state)
        case "malformed":
            detector = MalformedDetector(settings.malformed)
        case "canary":
            detector = CanaryDetector(settings.canary)
        case _:
            detector = SessionLimitDetector(settings.session_limit)
    return detector


def build_engine(
    detection: DetectionSettings | None = None, *, bans: BanSettings | None = None
) -> Engine:
    """The engine both modes run: the enabled detectors and the ban policy."""
    return Engine(build_detectors(detection or DetectionSettings()), bans=bans)
