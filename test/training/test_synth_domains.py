"""The synthetic source domain (issue 19): a shifted distribution used only for pretraining.
The target domain stays exactly the generator it always was; the source differs in the
intended statistics (room size, furniture mix and count, textures, lighting, camera height)
and never repeats a target frame."""
from __future__ import annotations

import json

import numpy as np
import pytest

from training.config import parse_config
from training.data.synth import render_frame, write_synth_dataset
from training.data.synth.scene import CLASS_ID, DOMAINS, random_scene
from training.errors import ConfigError, DataError

N_SCENES = 150


def _scenes(domain: str) -> list:
    return [random_scene(np.random.default_rng([7, i, DOMAINS[domain].stream]), domain)
            for i in range(N_SCENES)]


def _items(scene) -> int:
    return len(scene.boxes) + len(scene.spheres) + len(scene.cylinders)


def test_target_is_the_default_domain_and_source_frames_are_new():
    default, target = render_frame(3, 5, 24, 32), render_frame(3, 5, 24, 32, "target")
    for a, b in ((default.sample.rgb, target.sample.rgb),
                 (default.sample.depth, target.sample.depth),
                 (default.sample.segmentation, target.sample.segmentation)):
        np.testing.assert_array_equal(a, b)
    source = render_frame(3, 5, 24, 32, "source")
    assert not np.array_equal(source.sample.depth, target.sample.depth)
    assert "domain=source" in source.sample.provenance.source
    assert "domain" not in target.sample.provenance.source


def test_source_differs_from_target_in_the_intended_statistics():
    src, tgt = _scenes("source"), _scenes("target")

    def mean(scenes, f):
        return float(np.mean([f(s) for s in scenes]))

    # larger rooms (floor area and height), more items, a low camera
    assert mean(src, lambda s: s.size[0] * s.size[1]) > 1.5 * mean(tgt, lambda s: s.size[0] * s.size[1])
    assert mean(src, lambda s: s.size[2]) > mean(tgt, lambda s: s.size[2]) + 0.3
    assert mean(src, _items) > mean(tgt, _items) + 1.0
    assert max(s.camera_position[2] for s in src) < min(s.camera_position[2] for s in tgt)
    # another object mix: tables and small objects are a larger share of the items
    def share(scenes, name):
        prims = [p.cls for s in scenes for p in [*s.boxes, *s.spheres, *s.cylinders]]
        return prims.count(CLASS_ID[name]) / len(prims)
    assert share(src, "objects") > share(tgt, "objects")
    # stronger, coarser textures
    amp = {d: np.mean([b.texture[0] for s in sc for b in s.boxes]) for d, sc in
           (("src", src), ("tgt", tgt))}
    freq = {d: np.mean([b.texture[1] for s in sc for b in s.boxes]) for d, sc in
            (("src", src), ("tgt", tgt))}
    assert amp["src"] > 2 * amp["tgt"] and freq["src"] < freq["tgt"]
    # harder lighting: more contrast in the rendered images (std of the pixel values per frame)
    contrast = {d: np.mean([render_frame(11, i, 24, 32, d).sample.rgb.std() for i in range(12)])
                for d in ("source", "target")}
    assert contrast["source"] > contrast["target"]


def test_dataset_records_its_domain(tmp_path):
    src = write_synth_dataset(tmp_path / "src", 4, 16, 24, seed=1000, bag=False, domain="source")
    tgt = write_synth_dataset(tmp_path / "tgt", 4, 16, 24, seed=0, bag=False)
    info_src = json.loads((src / "manifest.json").read_text())["info"]
    info_tgt = json.loads((tgt / "manifest.json").read_text())["info"]
    assert info_src["domain"] == "source"
    assert info_src["domain_settings"]["camera_height"] == list(DOMAINS["source"].camera_height)
    assert "domain" not in info_tgt  # the target's manifest is as it always was
    with pytest.raises(DataError, match="unknown synthetic domain"):
        write_synth_dataset(tmp_path / "x", 4, 16, 24, seed=0, bag=False, domain="mars")


def _raw(domain):
    return {"name": "t", "model": {"arch": "mt", "backbone": "test_efficientnet",
                                   "tasks": ["depth"]},
            "data": {"synth": {"count": 8, "domain": domain}},
            "stages": [{"name": "mt", "kind": "train-mt", "init": "runs/src/mt"}]}


def test_config_accepts_the_domain_and_init():
    config = parse_config(_raw("source"))
    assert config.data["synth"]["domain"] == "source"
    assert config.stage("mt").options["init"] == "runs/src/mt"
    with pytest.raises(ConfigError, match="domain"):
        parse_config(_raw("mars"))
