"""The learning side: a frozen base LM, LoRA adapters, and the federated methods (no simpy here)."""
