"""Open-loop replay of a workload against OpenAI-compatible endpoints (``burstpilot replay``)."""

from .client import Timeouts
from .merge import merge
from .metrics import parse_slo, summarize
from .runner import ReplayOptions, replay
from .schedule import Schedule, build_schedule

__all__ = [
    "ReplayOptions",
    "Schedule",
    "Timeouts",
    "build_schedule",
    "merge",
    "parse_slo",
    "replay",
    "summarize",
]
