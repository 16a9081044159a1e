"""The command line's shared grammar for durations and SLOs, so every ``--slo`` flag reads the same way."""

from __future__ import annotations

import re

from burstpilot.errors import BurstpilotError

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|us|s|m|min|h|d)?\s*$")
_UNIT_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, what: str) -> float:
    """'2s', '100ms', '250us', '10m', '1h', '1d' or a bare number of seconds -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise BurstpilotError(f"{what}: {text!r} is not a duration (examples: 2s, 100ms, 10m, 1h)")
    return float(m.group(1)) * _UNIT_S[m.group(2) or "s"]


def parse_slo(text: str, durations: tuple[str, ...], numbers: tuple[str, ...] = ()) -> dict[str, float]:
    """'ttft=2s,tpot=100ms' -> {'ttft': 2.0, 'tpot': 0.1}: each of ``durations`` in seconds, each of
    ``numbers`` (e.g. attainment=0.99) as a plain number. Unknown names and bad values name the part."""
    allowed = durations + numbers
    slo: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in allowed:
            raise BurstpilotError(f"--slo: {part!r}: expected one of {', '.join(allowed)} as NAME=VALUE")
        if key in numbers:
            try:
                slo[key] = float(value)
            except ValueError:
                raise BurstpilotError(f"--slo {key}: {value.strip()!r} is not a number") from None
        else:
            slo[key] = parse_duration(value, f"--slo {key}")
    if not slo:
        raise BurstpilotError("--slo: no objective given (example: ttft=2s,tpot=100ms)")
    return slo
