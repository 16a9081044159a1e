"""Fixtures for the traces tests: the shipped Azure trace and small generated traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from burstpilot.traces import make_trace

REPO = Path(__file__).resolve().parents[2]
AZURE = REPO.parent / "shared" / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"


@pytest.fixture(scope="session")
def azure_path() -> Path:
    if not AZURE.exists():
        pytest.skip(f"shared Azure trace not found at {AZURE}")
    return AZURE


@pytest.fixture(scope="session")
def azure_analysis(azure_path, tmp_path_factory):
    """One full analyze of the Azure trace (figures and report) per test session."""
    from burstpilot.traces import read_trace
    from burstpilot.traces.analyze import analyze

    out = tmp_path_factory.mktemp("azure_report")
    summary = analyze(read_trace(azure_path), out)
    return out, summary


def gamma_arrivals(rng, shape: float, rate: float, n: int, resolution: float = 0.0) -> np.ndarray:
    """Arrivals of a Gamma renewal process (numpy scale = 1 / (shape * rate)), optionally floored."""
    t = np.cumsum(rng.gamma(shape, 1.0 / (shape * rate), n))
    return np.floor(t / resolution) * resolution if resolution else t


def small_trace(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.floor(gamma_arrivals(rng, 0.5, 1.0, n))
    req = rng.integers(1, 4000, n)
    resp = rng.integers(0, 800, n)
    models = np.where(rng.random(n) < 0.7, "ChatGPT", "GPT-4")
    logs = np.where(rng.random(n) < 0.5, "Conversation log", "API log")
    sess = np.where(logs == "Conversation log", rng.integers(0, 50, n), -1)
    elapsed = np.round(rng.uniform(0.5, 30, n), 3)
    return make_trace(t, req, resp, model=models, log_type=logs, session_id=sess, elapsed_s=elapsed)
