"""fimp.pretrained."""
