"""Which frames to label next: per-frame scores from a model bundle and selection strategies."""
