"""Replica profiles: one JSON file per (GPU, model) under ``burstpilot/sim/profiles/``.

A profile holds the memory figures that size the KV cache, the scheduler limits, the cold-start
distribution and the fitted step-time model. One scheduler step carries ``B`` decoding sequences that hold
``C`` KV tokens in total and ``P`` prompt tokens of prefill chunks; it costs (see docs/sim.md)::

    step_ms = t0 + smax(w_ms, (B + P) * f_ms) + C * max(k_ms, kl_ms / B) + p1 * P + p2 * (P**2 + 2 * A)
    smax(a, b) = (a**n + b**n) ** (1/n)          (a smoothed roofline corner; n = 0 means a hard max)

``t0`` is the fixed cost of a step (launches, norms, sampling), ``w_ms`` the time to stream the weights once,
``f_ms`` the dense layers' cost per token once they are compute bound, ``k_ms`` the time to read one token's K
and V across all layers at full bandwidth, ``kl_ms`` the per-token time of one sequence's attention when too few
sequences run to fill the GPU (``C / B`` is the mean context length), ``p1`` the per-token extra of prefill
(rotary, copies) and ``p2`` its causal attention; ``A`` is the chunk-by-prefix attention of chunks that continue
a partly computed prompt. ``decode_ms(B, C)`` is the step with ``P = 0`` and ``prefill_ms(N)`` the step with
``B = 0, P = N``. For a fixed batch the cost is linear in ``C``, which lets the discrete-event mode sum a run
of decode steps in closed form.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from burstpilot.errors import BurstpilotError

GIB = 1024**3


@dataclass(frozen=True)
class StepModel:
    t0: float
    w_ms: float
    f_ms: float
    n: float
    k_ms: float
    kl_ms: float
    p1: float
    p2: float

    FIELDS = ("t0", "w_ms", "f_ms", "n", "k_ms", "kl_ms", "p1", "p2")

    def __post_init__(self):
        # dense_ms by token count: the simulator asks for the same few hundred counts millions of times
        object.__setattr__(self, "_dense", {})

    def dense_ms(self, tokens: float) -> float:
        ms = self._dense.get(tokens)
        if ms is None:
            a, b = self.w_ms, tokens * self.f_ms
            ms = max(a, b) if self.n <= 0 else (a**self.n + b**self.n) ** (1.0 / self.n)
            if len(self._dense) < 1 << 16:
                self._dense[tokens] = ms
        return ms

    def ctx_ms(self, batch: float) -> float:
        """Cost of one KV token held by a decoding batch of ``batch`` sequences."""
        return max(self.k_ms, self.kl_ms / batch) if batch > 0 else 0.0

    def step_ms(
        self, batch: int, context_tokens: float, prefill_tokens: int = 0, prefill_attn: float = 0.0
    ) -> float:
        if batch <= 0 and prefill_tokens <= 0:
            return 0.0
        ms = self.t0 + self.dense_ms(batch + prefill_tokens)
        if batch > 0:
            ms += context_tokens * self.ctx_ms(batch)
        if prefill_tokens > 0:
            ms += self.p1 * prefill_tokens + self.p2 * (prefill_tokens * prefill_tokens + 2.0 * prefill_attn)
        return ms

    def decode_ms(self, batch: float, context_tokens: float) -> float:
        return self.step_ms(batch, context_tokens, 0)

    def prefill_ms(self, tokens: float) -> float:
        return self.step_ms(0, 0.0, tokens)


@dataclass(frozen=True)
class ColdStart:
    """Model-load time: lognormal with the given median, clipped to [min_s, max_s]."""

    median_s: float
    min_s: float
    max_s: float
    sigma: float = 0.35

    def sample(self, rng: np.random.Generator) -> float:
        x = self.median_s * math.exp(self.sigma * rng.standard_normal())
        return float(min(self.max_s, max(self.min_s, x)))


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    gpu: str
    model: str
    gpus_per_replica: int
    gpu_memory_gib: float
    gpu_memory_utilization: float
    weights_gib: float
    reserved_gib: float
    kv_bytes_per_token: int
    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    default_max_tokens: int
    cold_start: ColdStart
    step: StepModel
    calibration: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_kv_blocks * self.block_size

    @property
    def num_kv_blocks(self) -> int:
        free = (
            self.gpu_memory_gib * self.gpus_per_replica * self.gpu_memory_utilization
            - self.weights_gib
            - self.reserved_gib * self.gpus_per_replica
        ) * GIB
        return max(0, int(free // (self.kv_bytes_per_token * self.block_size)))

    @property
    def cold_start_s(self) -> float:
        return self.cold_start.median_s

    def sample_cold_start(self, rng: np.random.Generator) -> float:
        return self.cold_start.sample(rng)

    def decode_ms(self, batch: float, context_tokens: float) -> float:
        return self.step.decode_ms(batch, context_tokens)

    def prefill_ms(self, tokens: float) -> float:
        return self.step.prefill_ms(tokens)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "gpu": self.gpu,
            "model": self.model,
            "gpus_per_replica": self.gpus_per_replica,
            "kv_capacity_tokens": self.kv_capacity_tokens,
            "max_num_seqs": self.max_num_seqs,
            "cold_start_s": self.cold_start_s,
            "source": self.source,
            "description": self.description,
        }

    @property
    def source(self) -> str:
        """What of this profile was measured and what derived (its calibration record says)."""
        cal = self.calibration
        if cal.get("source"):
            return str(cal["source"])
        if cal.get("table"):
            return "measured"
        if cal.get("derived_from"):
            return f"derived from {cal['derived_from']}"
        return "not recorded"


def _profiles_dir():
    return resources.files("burstpilot.sim") / "profiles"


def list_profiles() -> list[str]:
    return sorted(p.name[:-5] for p in _profiles_dir().iterdir() if p.name.endswith(".json"))


def _req(d: dict, key: str, where: str, kind=float):
    if key not in d:
        raise BurstpilotError(f"{where}: missing field '{key}'")
    try:
        value = kind(d[key])
    except (TypeError, ValueError) as exc:
        raise BurstpilotError(f"{where}: field '{key}' must be {kind.__name__}, got {d[key]!r}") from exc
    if kind in (int, float) and value < 0:
        raise BurstpilotError(f"{where}: field '{key}' must not be negative, got {value}")
    return value


def profile_from_dict(d: dict, where: str) -> Profile:
    if not isinstance(d, dict):
        raise BurstpilotError(f"{where}: a profile is a JSON object")
    cs = d.get("cold_start")
    sm = d.get("step_model")
    if not isinstance(cs, dict):
        raise BurstpilotError(f"{where}: missing object 'cold_start'")
    if not isinstance(sm, dict):
        raise BurstpilotError(f"{where}: missing object 'step_model'")
    cold = ColdStart(
        median_s=_req(cs, "median_s", where + ": cold_start"),
        min_s=_req(cs, "min_s", where + ": cold_start"),
        max_s=_req(cs, "max_s", where + ": cold_start"),
        sigma=float(cs.get("sigma", 0.35)),
    )
    step = StepModel(**{k: _req(sm, k, where + ": step_model") for k in StepModel.FIELDS})
    prof = Profile(
        name=_req(d, "name", where, str),
        description=str(d.get("description", "")),
        gpu=_req(d, "gpu", where, str),
        model=_req(d, "model", where, str),
        gpus_per_replica=_req(d, "gpus_per_replica", where, int),
        gpu_memory_gib=_req(d, "gpu_memory_gib", where),
        gpu_memory_utilization=_req(d, "gpu_memory_utilization", where),
        weights_gib=_req(d, "weights_gib", where),
        reserved_gib=float(d.get("reserved_gib", 0.0)),
        kv_bytes_per_token=_req(d, "kv_bytes_per_token", where, int),
        block_size=_req(d, "block_size", where, int),
        max_num_seqs=_req(d, "max_num_seqs", where, int),
        max_num_batched_tokens=_req(d, "max_num_batched_tokens", where, int),
        max_model_len=_req(d, "max_model_len", where, int),
        default_max_tokens=int(d.get("default_max_tokens", 256)),
        cold_start=cold,
        step=step,
        calibration=dict(d.get("calibration", {})),
        path=where,
    )
    if prof.block_size < 1 or prof.max_num_seqs < 1 or prof.max_num_batched_tokens < 1:
        raise BurstpilotError(f"{where}: block_size, max_num_seqs and max_num_batched_tokens must be >= 1")
    if prof.num_kv_blocks < 1:
        raise BurstpilotError(f"{where}: no memory left for the KV cache after the weights")
    return prof


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name, or a profile JSON file by path."""
    text = str(name_or_path)
    if text in list_profiles():
        res = _profiles_dir() / f"{text}.json"
        raw, where = res.read_text(), f"profile {text}"
    else:
        path = Path(text)
        if not path.is_file():
            raise BurstpilotError(
                f"unknown profile '{text}' (known: {', '.join(list_profiles())}; or a JSON file path)"
            )
        raw, where = path.read_text(), str(path)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BurstpilotError(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    return profile_from_dict(data, where)
