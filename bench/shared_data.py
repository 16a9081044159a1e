"""Where the benchmarks find the shared data: ../shared beside the checkout, as on every checkout and in CI."""

from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# Azure LLM inference trace 2023, conversation (CC-BY 4.0; Patel et al., "Splitwise", ISCA 2024).
AZURE = SHARED / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
# Mooncake FAST'25 conversation trace (Apache-2.0; Qin et al., "Mooncake", FAST 2025); timestamps on a 3 s grid.
MOONCAKE = SHARED / "mooncake" / "conversation_trace.jsonl"
