"""Shipped replica profiles (JSON), read by burstpilot.sim.profile."""
