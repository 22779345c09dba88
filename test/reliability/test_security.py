"""Security checks that are cheap to keep true: nothing in the package, the training module,
the launch files or the benchmarks loads a pickle (``pickle``/``dill``/``joblib``, ``torch.load``
without ``weights_only=True``, ``np.load(..., allow_pickle=True)``, ``yaml.load`` without the
safe loader); timm backbones download weights only when the user asks for ``pretrained: imagenet``
(through timm's own cache); nothing opens network
connections itself (DDS is the only traffic); paths that come from node parameters are
validated before use."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("mbmt_ros", "training", "launch", "benchmarks", "scripts")
                 for p in (REPO / d).rglob("*.py"))
NETWORK_MODULES = {"urllib", "urllib3", "requests", "httpx", "http", "socket", "ftplib",
                   "aiohttp", "huggingface_hub"}
PICKLE_MODULES = {"pickle", "cPickle", "dill", "joblib", "shelve", "marshal"}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                yield node, func.value.id, func.attr
            elif isinstance(func, ast.Name):
                yield node, "", func.id


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    where = path.relative_to(REPO)
    for call, owner, name in _calls(tree):
        line = f"{where}:{call.lineno}"
        if owner in PICKLE_MODULES and name in ("load", "loads", "Unpickler", "open"):
            found.append(f"{line}: {owner}.{name} unpickles")
        if owner == "torch" and name == "load" and not _is_const(_keyword(call, "weights_only"), True):
            found.append(f"{line}: torch.load without weights_only=True")
        if owner in ("np", "numpy") and name == "load" and _is_const(_keyword(call, "allow_pickle"), True):
            found.append(f"{line}: np.load(allow_pickle=True)")
        if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load"):
            loader = _keyword(call, "Loader")
            if not (isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                found.append(f"{line}: yaml.{name} without SafeLoader (use yaml.safe_load)")
        if name == "create_model" and not _is_const(_keyword(call, "pretrained"), False):
            found.append(f"{line}: timm.create_model without pretrained=False (would download)")
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for mod in names:
            if mod.split(".")[0] in NETWORK_MODULES:
                found.append(f"{where}:{node.lineno}: imports {mod} (network access)")
    return found


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    bad = REPO / "training" / "_security_probe_tmp.py"
    try:
        bad.write_text("import pickle, yaml, torch, numpy as np, socket\n"
                       "pickle.load(open('x', 'rb'))\ntorch.load('x')\n"
                       "torch.load('x', weights_only=False)\nnp.load('x', allow_pickle=True)\n"
                       "yaml.load('a: 1', Loader=yaml.Loader)\n"
                       "timm.create_model('resnet18', pretrained=True)\n")
        assert len(_problems(bad)) == 7
    finally:
        bad.unlink()


# The one sanctioned download: ``model.pretrained: imagenet`` asks timm for its ImageNet
# weights through timm's own Hugging Face / torch hub cache (the user opted in; offline
# variables are honoured). Only these two sites may do it; every other finding fails.
SANCTIONED = {
    ("mbmt_ros/models/backbone.py", "timm.create_model without pretrained=False"):
        "create_timm_model: pretrained=True only when model.pretrained is 'imagenet'",
    ("mbmt_ros/models/pretrained.py", "imports huggingface_hub"):
        "imagenet_weights_cached: reads the Hub cache (try_to_load_from_cache), no traffic",
}


def _sanctioned(problem: str) -> bool:
    return any(problem.startswith(path + ":") and what in problem for path, what in SANCTIONED)


def test_nothing_unpickles_downloads_or_opens_sockets() -> None:
    assert SOURCES, "no sources found"
    problems = [p for path in SOURCES for p in _problems(path)]
    unexpected = [p for p in problems if not _sanctioned(p)]
    assert not unexpected, "\n".join(unexpected)
    # each sanctioned site still exists (a stale allow-list would hide a moved download)
    for path, what in SANCTIONED:
        assert any(p.startswith(path + ":") and what in p for p in problems), (path, what)


def test_imagenet_download_is_opt_in() -> None:
    from mbmt_ros.models.pretrained import timm_weight_kwargs

    for value in (None, "", "weights.safetensors", "ImageNet21k", False):
        assert timm_weight_kwargs(value) == {"pretrained": False}, value
    assert timm_weight_kwargs("imagenet")["pretrained"] is True


def test_node_parameter_paths_are_validated(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    from mbmt_ros.ros.errors import NodeParameterError
    from mbmt_ros.ros.params import validate_params

    not_a_bundle = tmp_path / "empty"
    not_a_bundle.mkdir()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for bad in ("", str(tmp_path / "missing"), str(not_a_bundle), str(a_file),
                "http://example.com/bundle"):
        with pytest.raises(NodeParameterError, match="bundle"):
            validate_params({"bundle": bad})
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "meta.json").write_text("{}")
    assert validate_params({"bundle": str(bundle)}).bundle == bundle
    for bad in (str(tmp_path / "missing.yaml"), str(tmp_path)):
        with pytest.raises(NodeParameterError, match="palette_file"):
            validate_params({"bundle": str(bundle), "palette_file": bad})
    for bad in ("gpu0", "cuda:x", "cpu; rm -rf /", "../cuda"):  # gpu, auto: OpenVINO devices
        with pytest.raises(NodeParameterError, match="device"):
            validate_params({"bundle": str(bundle), "device": bad})
