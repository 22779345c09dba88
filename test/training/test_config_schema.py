"""Every config value is checked before training starts (typed schema, model registry, timm
names); errors are one line naming the file or the ``--set`` flag and the key."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from training.config import parse_config, read_config
from training.errors import ConfigError
from training.stages.options import apply_overrides

REPO = Path(__file__).resolve().parents[2]
MBMT = REPO / "config" / "train" / "nyuv2_mbmt.yaml"


def parse_with(item: str, config: Path = MBMT):
    raw = apply_overrides(read_config(config), [item])
    return parse_config(raw, path=config, overrides=[item])


@pytest.mark.parametrize("item, key, reason", [
    ("train.weight_decay=abc", "train.weight_decay", "valid number"),
    ("train.precision=banana", "train.precision", "unknown precision 'banana'"),
    ("train.weighting=nonexist", "train.weighting", "unknown weighting 'nonexist'"),
    ("train.strategy=foo", "train.strategy", "unknown strategy 'foo'"),
    ("train.gradient_clip=-1", "train.gradient_clip", "greater than or equal to 0"),
    ("model.encoder=nonexist", "model.encoder", "unknown key for the 'mbmt' architecture"),
    ("model.backbones=[efficientnet_b2,efficientnet_bx,efficientnet_b2]", "model.backbones",
     "unknown backbone 'efficientnet_bx'"),
    ("stages.mt.model.backbone=resnet_9000", "stages.mt.model.backbone",
     "unknown backbone 'resnet_9000'"),
    ("stages.pretrain-st.train.lr=-1", "stages.pretrain-st.train.lr", "greater than 0"),
    ("train.augment=maybe", "train.augment", "valid boolean"),
    ("data.val_from_train=1.5", "data.val_from_train", "less than 1"),
    ("stages.evaluate.samples=-2", "stages.evaluate.samples", "greater than or equal to 0"),
    # values only the architecture's builder knows (run on the meta device at load)
    ("model.fusion=bogus", "model.fusion", "unknown model.fusion 'bogus'"),
    ("stages.mt.model.num_classes=0", "stages.mt.model.num_classes", "integer >= 1"),
])
def test_bad_values_name_the_flag_and_key(item, key, reason):
    with pytest.raises(ConfigError) as info:
        parse_with(item)
    message = str(info.value)
    assert message.startswith(f"--set {item}: {key}: ") and reason in message
    assert "\n" not in message


def test_mtinet_neck_is_checked_at_load():
    arch = REPO / "config" / "train" / "nyuv2_mtinet.yaml"
    with pytest.raises(ConfigError, match=r"^--set model.neck=bogus: model.neck: .*unknown "
                                          r"model.neck 'bogus'"):
        parse_with("model.neck=bogus", arch)


def test_model_typo_in_an_mbmt_file_is_caught_at_load_not_at_assemble(tmp_path):
    raw = yaml.safe_load(MBMT.read_text())
    raw["model"]["fusoin"] = "add"  # only the MBMT assembly reads the shared MBMT keys
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"^{path}: model.fusoin: unknown key"):
        parse_config(read_config(path), path=path)


def test_values_are_normalised_and_good_overrides_pass():
    config = parse_with("train.weight_decay=1e-4")  # YAML 1.1 reads '1e-4' as a string
    assert config.train["weight_decay"] == pytest.approx(1e-4)
    assert all(s.train["weight_decay"] == pytest.approx(1e-4) for s in config.stages)


def test_cli_exits_2_with_one_line_and_creates_nothing(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "mbmt-train"), "pipeline", "--config", str(MBMT),
         "--run-dir", str(run), "--set", "train.precision=banana"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        proc.stderr.strip()] and "--set train.precision=banana: train.precision" in proc.stderr
    assert not run.exists()
