"""Labelling round trips: frame lists (``select`` output) and annotation-tool archives (CVAT)."""
