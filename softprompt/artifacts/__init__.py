"""Prompt artifacts: safetensors + JSON manifest, nothing executable."""
