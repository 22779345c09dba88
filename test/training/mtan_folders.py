"""Dataset folders exactly as MTAN's preprocessed NYUv2 / Cityscapes copies are downloaded.

``<root>/{train,val}/{image,label,depth,normal}/<i>.npy`` with MTAN's dtypes and shapes:
images float64 (H, W, 3) in [0, 1], labels float64 (H, W) with -1 = void, depth float64
(H, W, 1) metres, normals float64 (H, W, 3); Cityscapes has ``label_7`` / ``label_19`` and
no ``normal``. No ``manifest.json`` - that is the point.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

#: one frame: uint8 RGB (H, W, 3), int labels (H, W; -1 void), depth (H, W) m, normals (H, W, 3)
Frame = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def write_mtan_folder(root: Path, frames: list[Frame], n_val: int,
                      cityscapes: bool = False) -> Path:
    """Write ``frames`` (the last ``n_val`` as ``val``) in MTAN's layout and dtypes."""
    for i, (rgb, seg, depth, normals) in enumerate(frames):
        split, index = ("val", i - (len(frames) - n_val)) if i >= len(frames) - n_val \
            else ("train", i)
        arrays = {"image": rgb.astype(np.float64) / 255.0,
                  "depth": depth.astype(np.float64)[:, :, None]}
        if cityscapes:
            # 7 categories, 19 classes: derived from the 13 NYU classes, void stays void
            arrays["label_7"] = np.where(seg < 0, -1, seg % 7).astype(np.float64)
            arrays["label_19"] = np.where(seg < 0, -1, seg).astype(np.float64)
        else:
            arrays["label"] = seg.astype(np.float64)
            arrays["normal"] = normals.astype(np.float64)
        for folder, arr in arrays.items():
            out = root / split / folder
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / f"{index}.npy", arr)
    return root


def synthetic_frames(count: int, height: int, width: int, seed: int = 0) -> list[Frame]:
    """The project's synthetic indoor scenes (all three labels)."""
    from training.data.synth.render import render_frame

    out = []
    for i in range(count):
        s = render_frame(seed, i, height, width).sample
        out.append((s.rgb, s.segmentation, s.depth, s.normals))
    return out


def real_nyu_frames(shared: Path, count: int, height: int, width: int,
                    scratch: Path) -> list[Frame]:
    """Real NYU Depth V2 RGB-D frames (``nyu_rgbd_mini``), resized; normals from their depth;
    labels are real NYUv2 13-class label maps (``nyuv2_test_labels_13``, unpacked into
    ``scratch``) - real label files, though not of these frames, which come without labels."""
    from training.data.camera import NYU_KINECT
    from training.data.label_png import read_label_png
    from training.data.normals_from_depth import normals_from_depth

    camera = NYU_KINECT.scaled(width, height)
    with tarfile.open(shared / "nyuv2_test_labels_13" / "nyuv2_test_class13.tgz") as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith(".png")),
                         key=lambda m: m.name)[:count]
        pngs = []
        for m in members:
            pngs.append(scratch / Path(m.name).name)
            pngs[-1].write_bytes(tar.extractfile(m).read())
    out = []
    for i in range(count):
        root = shared / "nyu_rgbd_mini"
        rgb = Image.open(root / f"image_{i}.png").convert("RGB").resize((width, height),
                                                                         Image.BILINEAR)
        depth_mm = Image.open(root / f"depth_{i}.png").resize((width, height), Image.NEAREST)
        depth = np.asarray(depth_mm).astype(np.float32) / 1000.0
        seg = read_label_png(pngs[i], 13)
        seg = np.asarray(Image.fromarray((seg + 1).astype(np.uint8)).resize(
            (width, height), Image.NEAREST)).astype(np.int64) - 1
        normals, _ = normals_from_depth(depth, camera)
        out.append((np.asarray(rgb), seg, depth, normals))
    return out
