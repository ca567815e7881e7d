"""NeuroLM: EEG as a foreign language for a large language model."""

__version__ = "0.1.0"
