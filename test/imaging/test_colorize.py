"""One colouring module: the node's colour topics and the training result grids share
``mbmt_ros.imaging.colorize`` (one depth colour map, one palette look-up, one normal map)."""
from __future__ import annotations

import numpy as np
import pytest

from mbmt_ros.imaging import colorize


def test_depth_colormap_is_matplotlibs_inferno_and_near_is_bright() -> None:
    colormaps = pytest.importorskip("matplotlib").colormaps
    reference = np.rint(colormaps[colorize.DEPTH_COLORMAP_NAME](np.linspace(0, 1, 256))[:, :3] * 255)
    np.testing.assert_array_equal(colorize.DEPTH_COLORMAP, reference.astype(np.uint8))
    rgb = colorize.colorize_depth(np.array([[1.0, 2.0, 3.0, 0.0, np.inf]]), max_depth=3.0, min_depth=1.0)
    np.testing.assert_array_equal(rgb[0, :3], colorize.DEPTH_COLORMAP[[255, 128, 0]])
    np.testing.assert_array_equal(rgb[0, 3:], 0)  # invalid: black


def test_result_grids_colour_with_the_node_module() -> None:
    pytest.importorskip("matplotlib")
    import training.plots as plots

    for name in ("colorize_segmentation", "colorize_depth", "colorize_normals"):
        assert getattr(plots, name) is getattr(colorize, name)
    ids = np.array([[0, 1], [-1, 20]])
    panel, span = plots._draw("segmentation", ids, ids, [(1, 2, 3), (4, 5, 6)])
    np.testing.assert_array_equal(panel, [[[1, 2, 3], [4, 5, 6]], [[0, 0, 0], [0, 0, 0]]])
    assert span is None
    depth = np.array([[1.0, 3.0]])
    panel, span = plots._draw("depth", depth, depth, [])
    np.testing.assert_array_equal(panel, [colorize.DEPTH_COLORMAP[[255, 0]]])
    assert span == (1.0, 3.0)  # the colour bar's range: the ground truth's
    normals = np.zeros((1, 2, 3), np.float32)
    normals[0, 0] = (0, 0, -1)
    panel, _ = plots._draw("normals", normals, normals, [])
    np.testing.assert_array_equal(panel, [[[128, 128, 0], [0, 0, 0]]])
