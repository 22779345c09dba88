"""``mbmt-train label-export`` / ``label-import`` with CVAT "Segmentation mask 1.1" archives,
through the CLI: the archive's layout, a lossless export -> import round trip (palette and RGB
masks, archives with a top folder), label PNGs that ``extract-bag --labels`` reads, what the
import reports (frames labelled for the first time vs replaced), masks held as bytes, the
progress bar that ``-q`` silences, and the errors (unknown colours, missing frames, label map
mismatch, a misplaced labelmap.txt) that leave the dataset untouched.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from loop_helpers import digest_tree, mbmt_train, mbmt_train_on_terminal, one_line_error
from PIL import Image

from mbmt_ros.tasks import NYU13_CLASSES, NYU13_PALETTE
from training.data.label_png import read_label_png
from training.data.synth import write_synth_dataset
from training.labeling.cvat import class_ids, read_masks

FRAMES = ["train/1", "train/3", "val/0"]
H, W = 24, 32


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 synthetic frames (6 train, 2 val) at 24x32 with their rosbag2 recording; train/1 gets
    a void rectangle so that the round trip must keep unlabelled pixels unlabelled."""
    root = write_synth_dataset(tmp_path_factory.mktemp("cvat") / "data", 8, H, W, seed=5,
                               val_fraction=0.25)
    label = np.load(root / "train" / "label" / "1.npy")
    label[2:9, 4:15] = -1
    np.save(root / "train" / "label" / "1.npy", label)
    return root


def labels(root: Path, frame: str) -> np.ndarray:
    split, index = frame.split("/")
    return np.load(root / split / "label" / f"{index}.npy").astype(np.int64)


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def entry(man: dict, frame: str) -> dict:
    split, index = frame.split("/")
    return next(s for s in man["samples"] if s["split"] == split and s["index"] == int(index))


@pytest.fixture(scope="module")
def task(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The frames of FRAMES exported with their own labels as the pre-annotations."""
    folder = tmp_path_factory.mktemp("task")
    (folder / "frames.txt").write_text("# chosen by hand\n" + "\n".join(FRAMES) + "\n")
    mbmt_train("label-export", "--data", synth, "--frames", folder / "frames.txt",
               "--format", "cvat", "--out", folder / "task.zip")
    return folder / "task.zip"


@pytest.fixture
def unlabelled(synth: Path, tmp_path: Path) -> Path:
    """A copy of the dataset in which FRAMES have no segmentation (void files, manifest)."""
    root = Path(shutil.copytree(synth, tmp_path / "unlabelled"))
    man = manifest(root)
    for frame in FRAMES:
        entry(man, frame)["labels"].pop("segmentation")
        split, index = frame.split("/")
        np.save(root / split / "label" / f"{index}.npy", np.full((H, W), -1, np.int16))
    (root / "manifest.json").write_text(json.dumps(man))
    return root


def names(synth: Path) -> list[str]:
    return [str(entry(manifest(synth), f)["stamp_ns"]) for f in FRAMES]


def test_export_writes_the_segmentation_mask_layout(synth: Path, task: Path) -> None:
    stems = names(synth)
    raw = json.loads(task.with_name("task.labels.json").read_text())  # CVAT's Raw label editor
    assert [(x["name"], x["color"]) for x in raw] == [
        (n, f"#{r:02x}{g:02x}{b:02x}")
        for n, (r, g, b) in zip(NYU13_CLASSES, NYU13_PALETTE, strict=True)]
    with zipfile.ZipFile(task) as zf:
        assert sorted(zf.namelist()) == sorted(
            ["labelmap.txt", "ImageSets/Segmentation/default.txt"]
            + [f"{d}/{n}.png" for n in stems
               for d in ("SegmentationClass", "SegmentationObject", "JPEGImages")])
        labelmap = zf.read("labelmap.txt").decode().splitlines()
        assert labelmap[0] == "# label:color_rgb:parts:actions"
        assert labelmap[1] == "background:0,0,0::"
        assert labelmap[2:] == [f"{n}:{r},{g},{b}::"
                                for n, (r, g, b) in zip(NYU13_CLASSES, NYU13_PALETTE, strict=True)]
        assert zf.read("ImageSets/Segmentation/default.txt").decode().split() == stems
        for frame, stem in zip(FRAMES, stems, strict=True):
            split, index = frame.split("/")
            image = np.asarray(Image.open(io.BytesIO(zf.read(f"JPEGImages/{stem}.png"))))
            assert np.array_equal(image, np.load(synth / split / "image" / f"{index}.npy"))
            cls = Image.open(io.BytesIO(zf.read(f"SegmentationClass/{stem}.png")))
            obj = Image.open(io.BytesIO(zf.read(f"SegmentationObject/{stem}.png")))
            assert cls.size == obj.size == (W, H)
            colours = np.asarray(cls.convert("RGB"))
            truth = labels(synth, frame)
            expected = np.array([(0, 0, 0), *NYU13_PALETTE], np.uint8)[truth + 1]
            assert np.array_equal(colours, expected)  # class colours of labelmap.txt
            inst = np.asarray(obj)  # one instance per class present, 0 = background
            assert len(np.unique(inst[truth >= 0])) == len(np.unique(truth[truth >= 0]))
            assert (inst[truth < 0] == 0).all()


def test_round_trip_into_the_dataset_is_lossless(synth: Path, task: Path,
                                                 unlabelled: Path) -> None:
    others = {k: v for k, v in digest_tree(unlabelled).items()
              if "label/" not in k and k != "manifest.json"}
    proc = mbmt_train("label-import", "--format", "cvat", "--in", task, "--data", unlabelled)
    assert "3 masks imported" in proc.stdout
    assert "3 frames labelled for the first time, 0 replaced existing ground truth" in proc.stdout
    assert (labels(synth, "train/1") == -1).any()  # the void pixels made the trip
    for frame in FRAMES:
        assert np.array_equal(labels(unlabelled, frame), labels(synth, frame))
        assert entry(manifest(unlabelled), frame)["labels"]["segmentation"] == "gt"
    man = manifest(unlabelled)
    assert man["info"]["label_imports"][-1]["frames"] == FRAMES
    assert {k: v for k, v in digest_tree(unlabelled).items() if k in others} == others
    from training.data.dataset import MultiTaskDataset

    ds = MultiTaskDataset(unlabelled, "train")  # what training reads
    item = ds[ds.indices.index(3)]
    assert item["has_segmentation"] and np.array_equal(item["segmentation"].numpy(),
                                                       labels(synth, "train/3"))


def test_import_reports_first_labels_and_replaced_ones(synth: Path, task: Path,
                                                       unlabelled: Path) -> None:
    """train/1 already has ground truth, train/3 only a pseudo label, val/0 nothing: one
    frame's labels are replaced, two are labelled for the first time; once more, all three."""
    man = manifest(unlabelled)
    entry(man, "train/1")["labels"]["segmentation"] = "gt"
    entry(man, "train/3")["labels"]["segmentation"] = "pseudo"
    (unlabelled / "manifest.json").write_text(json.dumps(man))
    proc = mbmt_train("label-import", "--in", task, "--data", unlabelled)
    assert "2 frames labelled for the first time, 1 replaced existing ground truth" in proc.stdout
    again = mbmt_train("label-import", "--in", task, "--data", unlabelled)
    assert "0 frames labelled for the first time, 3 replaced existing ground truth" in again.stdout
    for frame in FRAMES:
        assert entry(manifest(unlabelled), frame)["labels"]["segmentation"] == "gt"


def test_masks_are_held_as_bytes_until_written(synth: Path, task: Path) -> None:
    """A byte a pixel (0 = void, k = class k-1) while the archive is read: 1,000 masks at
    720p are 0.9 GB, not the 7.4 GB of int64 class ids."""
    masks = read_masks(task, NYU13_CLASSES)
    assert sorted(masks) == sorted(names(synth))
    for frame, stem in zip(FRAMES, names(synth), strict=True):
        assert masks[stem].dtype == np.uint8 and masks[stem].shape == (H, W)
        assert np.array_equal(class_ids(masks[stem]), labels(synth, frame))


def test_export_progress_on_a_terminal_and_quiet_silences_it(synth: Path,
                                                             tmp_path: Path) -> None:
    (tmp_path / "frames.txt").write_text("\n".join(FRAMES) + "\n")
    args = ("label-export", "--data", synth, "--frames", tmp_path / "frames.txt",
            "--out", tmp_path / "t.zip")
    code, shown = mbmt_train_on_terminal(*args)
    assert code == 0, shown
    assert re.search(r"export:\s+\d+%\|", shown), shown  # the bar, through training.progress
    (tmp_path / "t.zip").unlink()
    code, quiet = mbmt_train_on_terminal("-q", *args)
    assert code == 0, quiet
    assert "export:" not in quiet and "%|" not in quiet, quiet
    assert (tmp_path / "t.zip").is_file()  # and the task was written


def rewrite(archive: Path, out: Path, change: Callable[[dict[str, bytes]], None],
            prefix: str = "") -> Path:
    with zipfile.ZipFile(archive) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    change(files)
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return out


def to_rgb(files: dict[str, bytes]) -> None:
    """CVAT may write its class masks as 3-channel colour PNGs."""
    for name in [n for n in files if n.startswith("SegmentationClass/")]:
        buf = io.BytesIO()
        Image.open(io.BytesIO(files[name])).convert("RGB").save(buf, "PNG")
        files[name] = buf.getvalue()
    for name in [n for n in files if n.startswith("JPEGImages/")]:
        del files[name]  # CVAT exports annotations without images by default


def test_rgb_masks_in_a_top_folder_and_label_pngs_for_extract_bag(
        synth: Path, task: Path, unlabelled: Path, tmp_path: Path) -> None:
    export = rewrite(task, tmp_path / "export.zip", to_rgb, prefix="task_7/")
    mbmt_train("label-import", "--in", export, "--data", unlabelled)
    for frame in FRAMES:
        assert np.array_equal(labels(unlabelled, frame), labels(synth, frame))
    # the same export as <stamp_ns>.png label PNGs, read back by extract-bag --labels
    before = digest_tree(synth)
    proc = mbmt_train("label-import", "--in", export, "--data", synth, "--labels-out",
                      tmp_path / "pngs")
    assert "3 frames labelled for the first time, 0 replaced existing label PNGs" in proc.stdout
    again = mbmt_train("label-import", "--in", export, "--data", synth, "--labels-out",
                       tmp_path / "pngs")
    assert "0 frames labelled for the first time, 3 replaced existing label PNGs" in again.stdout
    assert digest_tree(synth) == before  # --labels-out leaves the dataset alone
    stems = names(synth)
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == sorted(
        f"{s}.png" for s in stems)
    for frame, stem in zip(FRAMES, stems, strict=True):
        assert np.array_equal(read_label_png(tmp_path / "pngs" / f"{stem}.png", 13),
                              labels(synth, frame))
    out = tmp_path / "extracted"
    mbmt_train("extract-bag", synth / "bag", "--rgb", "/camera/color/image_raw", "--depth",
               "/camera/depth/image_raw", "--labels", tmp_path / "pngs", "--out", out)
    ext = manifest(out)
    by_stamp = {s["stamp_ns"]: s for s in ext["samples"]}
    for frame, stem in zip(FRAMES, stems, strict=True):
        s = by_stamp[int(stem)]
        assert s["labels"]["segmentation"] == "gt"
        assert np.array_equal(labels(out, f"{s['split']}/{s['index']}"), labels(synth, frame))


def _paint(colour: tuple[int, int, int]) -> Callable[[dict[str, bytes]], None]:
    def change(files: dict[str, bytes]) -> None:
        name = sorted(n for n in files if n.startswith("SegmentationClass/"))[0]
        img = np.array(Image.open(io.BytesIO(files[name])).convert("RGB"))
        img[0, 0] = colour
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG")
        files[name] = buf.getvalue()
    return change


def _drop_mask(files: dict[str, bytes]) -> None:
    del files[sorted(n for n in files if n.startswith("SegmentationClass/"))[-1]]


def _rename_class(files: dict[str, bytes]) -> None:
    files["labelmap.txt"] = files["labelmap.txt"].replace(b"\nbed:", b"\nbedroom:")


def _foreign_frame(files: dict[str, bytes]) -> None:
    files["ImageSets/Segmentation/default.txt"] += b"1234\n"
    files["SegmentationClass/1234.png"] = next(
        v for n, v in files.items() if n.startswith("SegmentationClass/"))


def _drop_labelmap(files: dict[str, bytes]) -> None:
    del files["labelmap.txt"]


def _labelmap_in_a_subfolder(files: dict[str, bytes]) -> None:
    files["annotations/labelmap.txt"] = files.pop("labelmap.txt")


def _masks_in_a_subfolder(files: dict[str, bytes]) -> None:
    """Re-zipped by hand: labelmap.txt at the top, the task's folders one level down."""
    for name in [n for n in files if n != "labelmap.txt"]:
        files[f"task_7/{name}"] = files.pop(name)


@pytest.mark.parametrize(("change", "message"), [
    (_paint((1, 2, 3)), "colour (1, 2, 3) at 1 pixels is not in labelmap.txt"),
    (_drop_mask, "have no mask in SegmentationClass/"),
    (_rename_class, "labels ['bedroom'] are not classes of the dataset; classes ['bed'] are "
                    "missing"),
    (_foreign_frame, "frames 1234 are not in the dataset"),
    (_drop_labelmap, "no labelmap.txt"),
    (_labelmap_in_a_subfolder, "labelmap.txt is misplaced: found 'annotations/labelmap.txt', "
                               "but the masks (SegmentationClass/, ImageSets/Segmentation/"
                               "default.txt) are under '(top)'"),
    (_masks_in_a_subfolder, "labelmap.txt is misplaced: found 'labelmap.txt', but the masks "
                            "(SegmentationClass/, ImageSets/Segmentation/default.txt) are under "
                            "'task_7/'"),
])
def test_bad_exports_are_one_line_errors_and_change_nothing(
        task: Path, unlabelled: Path, tmp_path: Path, change: Callable, message: str) -> None:
    export = rewrite(task, tmp_path / "bad.zip", change)
    before = digest_tree(unlabelled)
    err = one_line_error(mbmt_train("label-import", "--in", export, "--data", unlabelled,
                                    check=False), "label-import")
    assert message in err
    assert digest_tree(unlabelled) == before


def test_export_errors_leave_no_archive(synth: Path, tmp_path: Path) -> None:
    (tmp_path / "frames.txt").write_text("train/1\ntrain/99\n")
    err = one_line_error(mbmt_train("label-export", "--data", synth, "--frames",
                                    tmp_path / "frames.txt", "--out", tmp_path / "t.zip",
                                    check=False), "label-export")
    assert "train/99 are not in the dataset's manifest" in err
    (tmp_path / "bad.txt").write_text("train/1\ntrain-3\n")
    err = one_line_error(mbmt_train("label-export", "--data", synth, "--frames",
                                    tmp_path / "bad.txt", "--out", tmp_path / "t.zip",
                                    check=False), "label-export")
    assert "bad.txt:2: 'train-3' is not a frame" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "frames.txt"]
    (tmp_path / "x.zip").write_text("not a zip")
    err = one_line_error(mbmt_train("label-import", "--in", tmp_path / "x.zip", "--data", synth,
                                    check=False), "label-import")
    assert "not a zip archive" in err


def test_the_loop_in_robot_md_uses_real_options() -> None:
    """Every ``mbmt-train`` command of docs/robot.md step 8 parses with the real CLI."""
    import re
    import shlex

    from training.cli import build_parser

    doc = (Path(__file__).resolve().parents[2] / "docs" / "robot.md").read_text()
    loop = doc[doc.index("## 8."):]
    commands = [" ".join(block.replace("\\\n", " ").split())
                for block in re.findall(r"```bash\n(.*?)```", loop, re.S)]
    lines = [ln.strip() for c in commands for ln in re.split(r"(?=mbmt-train )", c)
             if ln.strip().startswith("mbmt-train ")]
    used = {shlex.split(ln)[1] for ln in lines}
    assert {"extract-bag", "select", "label-export", "label-import", "pipeline"} <= used
    for line in lines:
        argv = shlex.split(line.split(" ros2 ")[0].split(" rsync ")[0])[1:]
        build_parser(argv[0]).parse_args(argv)  # exits (SystemExit) on an unknown option
