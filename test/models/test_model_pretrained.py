"""``model.pretrained: imagenet``: timm's own pretrained loading, download cache and offline
rules - exercised without any network: a local weight file through the same timm path
(``pretrained_cfg_overlay``), a Hugging Face cache laid out on disk, and the offline error."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from mbmt_ros.models import create_backbone
from mbmt_ros.models.pretrained import check_imagenet_weights, imagenet_weights_cached

REPO = Path(__file__).resolve().parents[2]


def _timm_weights(name: str, path: Path, seed: int = 123) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(name).state_dict().items()}
    save_file(state, str(path))
    return state


@pytest.mark.parametrize("name, in_chans", [("test_efficientnet", 3), ("test_resnet", 3),
                                             ("test_efficientnet", 1)])
def test_imagenet_loads_through_timm_with_a_local_file(tmp_path, name, in_chans):
    saved = _timm_weights(name, tmp_path / "w.safetensors")
    torch.manual_seed(0)
    backbone = create_backbone(name, in_chans=in_chans, pretrained="imagenet",
                               pretrained_cfg_overlay={"file": str(tmp_path / "w.safetensors")})
    random = create_backbone(name, in_chans=in_chans)
    body = backbone.body.state_dict()
    shared = [k for k in body if k in saved and body[k].shape == saved[k].shape
              and body[k].dtype.is_floating_point and "num_batches" not in k]
    assert len(shared) > 10
    for key in shared:
        torch.testing.assert_close(body[key], saved[key])
    assert any(not torch.equal(random.body.state_dict()[k], saved[k]) for k in shared)
    if in_chans == 1:  # timm adapts the RGB stem to one channel by summing it
        stem = next(k for k in saved if saved[k].ndim == 4)
        torch.testing.assert_close(body[stem], saved[stem].sum(dim=1, keepdim=True))


def _hf_cache(root: Path, repo: str, weights: Path) -> Path:
    """A Hugging Face hub cache holding ``repo``'s model.safetensors, as a download leaves it."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snap = folder / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(weights.read_bytes())
    return root


def test_cached_weights_load_offline_through_timms_cache(tmp_path):
    """HF_HUB_CACHE + HF_HUB_OFFLINE: timm finds the cached file; nothing is downloaded."""
    saved = _timm_weights("test_efficientnet", tmp_path / "w.safetensors")
    cache = _hf_cache(tmp_path / "hub", "timm/test_efficientnet.r160_in1k",
                      tmp_path / "w.safetensors")
    script = ("import torch; from mbmt_ros.models import create_backbone; "
              "from mbmt_ros.models.pretrained import check_imagenet_weights as c; "
              "c(['test_efficientnet']); b = create_backbone('test_efficientnet', "
              "pretrained='imagenet'); torch.save(b.body.state_dict(), 'out.pt')")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    body = torch.load(tmp_path / "out.pt", weights_only=True)
    torch.testing.assert_close(body["conv_stem.weight"], saved["conv_stem.weight"])


def test_offline_without_cache_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not imagenet_weights_cached("test_efficientnet")
    with pytest.raises(Exception) as info:
        check_imagenet_weights(["test_efficientnet"])
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "empty") in message
    assert "local weight file" in message and "HF_HUB_OFFLINE" in message


@pytest.mark.slow
def test_pipeline_refuses_offline_before_any_stage(tmp_path):
    """A paper config (``pretrained: imagenet``) offline with an empty cache: exit 2, one
    line naming the cache and the local-file alternative, no run folder."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    run = tmp_path / "run"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "mbmt-train"), "pipeline", "--config",
         str(REPO / "config" / "train" / "nyuv2_mtinet.yaml"), "--run-dir", str(run),
         "--set", f"data.root={tmp_path / 'data'}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(tmp_path / "hf" / "hub") in lines[0] and "local weight file" in lines[0]
    assert not run.exists()
