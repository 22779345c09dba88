"""Security checks that are cheap to keep true: nothing in the package, the training module,
the launch files or the benchmarks loads a pickle (``pickle``/``dill``/``joblib``, ``torch.load``
without ``weights_only=True``, ``np.load(..., allow_pickle=True)``, ``yaml.load`` without the
safe loader); timm backbones are never asked to download weights; nothing opens network
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


def test_nothing_unpickles_downloads_or_opens_sockets() -> None:
    assert SOURCES, "no sources found"
    problems = [p for path in SOURCES for p in _problems(path)]
    assert not problems, "\n".join(problems)


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
