"""burstpilot: keep GPU-backed LLM serving inside its latency SLO through bursty traffic."""

__version__ = "0.1.0"
