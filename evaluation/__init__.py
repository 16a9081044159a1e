"""`burstpilot evaluate` and `burstpilot demo`: every scaling policy on the same workload, scored on SLO
attainment against GPU-hours (discrete-event or real time). See docs/evaluation.md."""
