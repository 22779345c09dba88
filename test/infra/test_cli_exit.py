"""The console scripts' shared exit policy (mbmt_ros.cli.run_command)."""
from __future__ import annotations

import pytest

from mbmt_ros.cli import EXIT_ERROR, EXIT_INTERRUPTED, run_command
from mbmt_ros.errors import MbmtError


def test_user_error_is_one_line_and_exit_2(capsys):
    def fail():
        raise MbmtError("bundle /x has no model.onnx")

    assert run_command("mbmt-engine", "info", fail) == EXIT_ERROR == 2
    assert capsys.readouterr().err == "mbmt-engine info: error: bundle /x has no model.onnx\n"


def test_ctrl_c_exits_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert run_command("mbmt-train", "pipeline", interrupted) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "mbmt-train pipeline: interrupted\n"


def test_status_passes_through_and_bugs_keep_their_traceback():
    assert run_command("mbmt-train", "score", lambda: None) == 0
    assert run_command("mbmt-train", "score", lambda: 3) == 3
    with pytest.raises(ZeroDivisionError):
        run_command("mbmt-train", "score", lambda: 1 / 0)


@pytest.mark.parametrize("module", ["training.cli", "mbmt_ros.runtime.engine_cli"])
def test_both_console_scripts_apply_it(module, tmp_path, capsys):
    """A missing bundle / config through each real entry point: status 2, one line."""
    import importlib

    main = importlib.import_module(module).main
    argv = (["info", str(tmp_path / "nope")] if module.endswith("engine_cli")
            else ["pipeline", "--config", str(tmp_path / "nope.yaml")])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0], err
