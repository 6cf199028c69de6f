"""simfed: a discrete-event simulator for federated on-device fine-tuning of language models."""

__version__ = "0.1.0"
