"""Inference backends, one module each, imported only when chosen (see ``registry``).

Each module defines ``availability(device) -> str | None`` and
``open(bundle, precision, device, **options) -> Predictor``.
"""
from __future__ import annotations

__all__: list[str] = []
