"""Simulated vLLM-compatible GPU serving replicas: engine, profiles, HTTP server, fleet, discrete-event mode."""

from burstpilot.sim.profile import Profile, list_profiles, load_profile

__all__ = ["Profile", "list_profiles", "load_profile"]
