"""Data sources, the Sample type, transforms and label manifests."""
