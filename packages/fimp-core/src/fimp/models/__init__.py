"""fimp.models."""
