"""Frozen base model loading, fingerprints, and the injection layer (embedding splice, K/V prefix, hooks)."""
