"""The networks, one module per network over shared parts (backbones, pooling, visual words)."""
