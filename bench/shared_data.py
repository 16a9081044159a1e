"""Where the benchmarks find the shared data: ../shared beside the checkout, as on every checkout and in CI."""

from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# Azure LLM inference trace 2023, conversation (CC-BY 4.0; Patel et al., "Splitwise", ISCA 2024).
AZURE = SHARED / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
