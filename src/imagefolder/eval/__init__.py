"""Evaluations of trained models that need more than one forward pass: linear probing of tokenizer features."""
from .probe import POOLS, Features, extract_features, fit_linear_probe, probe_features, probe_tokenizer

__all__ = ["POOLS", "Features", "extract_features", "fit_linear_probe", "probe_features", "probe_tokenizer"]
