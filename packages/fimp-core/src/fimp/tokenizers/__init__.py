"""fimp.tokenizers."""
