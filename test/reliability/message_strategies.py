"""Hypothesis strategies for camera messages whose fields are sometimes consistent and often
not (shared by the property tests and the live-node fuzz test)."""
from __future__ import annotations

import array

from hypothesis import strategies as st
from sensor_msgs.msg import Image

from mbmt_ros.imaging.encodings import ENCODINGS

__all__ = ["U32", "encodings", "image_messages"]

U32 = 2**32 - 1

encodings = st.one_of(st.sampled_from(sorted(ENCODINGS)), st.text(max_size=12),
                      st.sampled_from(["RGB8", "bgr16", "jpeg", "yuv420", "8UC2", ""]))
small = st.integers(0, 40)
dims = st.one_of(small, st.integers(0, U32))


@st.composite
def image_messages(draw: st.DrawFn) -> Image:
    """Images whose fields are sometimes consistent and often not."""
    encoding = draw(encodings)
    height, width = draw(dims), draw(dims)
    info = ENCODINGS.get(encoding)
    row = width * (info.bytes_per_pixel if info else 3)
    step = draw(st.one_of(st.just(row), st.integers(row, row + 16), st.integers(0, U32)))
    step = min(step, U32)
    total = step * height
    length = draw(st.one_of(st.just(total), st.integers(0, 4096))) if total <= 20000 \
        else draw(st.integers(0, 4096))
    msg = Image()
    msg.height, msg.width, msg.step, msg.encoding = height, width, step, encoding
    msg.is_bigendian = draw(st.integers(0, 1))
    msg.data = array.array("B", draw(st.binary(min_size=length, max_size=length)))
    return msg
