import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from mobilenets.cli import COMMANDS, main

Cli = Callable[..., tuple[int, str, str]]


def test_profile_json_reports_paper_headline(cli: Cli) -> None:
    code, out, _ = cli("profile", "mobilenet_v1_1.0_224", "--json")
    data = json.loads(out)
    assert code == 0
    assert round(data["mult_adds"] / 1e6) == 569 and round(data["params"] / 1e6, 1) == 4.2
    assert set(data["by_type"]) == {"Conv 1×1", "Conv DW 3×3", "Conv 3×3", "Fully Connected"}
    assert all(isinstance(v["mult_adds"], int) and isinstance(v["params"], int) for v in data["by_type"].values())


def test_profile_overrides_and_per_layer(cli: Cli) -> None:
    code, out, _ = cli("profile", "mobilenet_v1_1.0_224", "--width-mult", "0.5", "--resolution", "160", "--per-layer")
    assert code == 0
    assert "@ 160×160" in out and "76.5 M mult-adds" in out and "block13.pw.conv" in out


def test_profile_grid(cli: Cli) -> None:
    code, out, _ = cli("profile", "--grid", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 16
    assert {(r["model"].split("_")[2], r["resolution"]) for r in rows} == {
        (a, r) for a in ("1.0", "0.75", "0.5", "0.25") for r in (224, 192, 160, 128)
    }
    code, out, _ = cli("profile", "--grid")
    assert out.count("mobilenet_v1_") == 16 and "published" in out


def test_list(cli: Cli) -> None:
    code, out, _ = cli("list", "mobilenet_v1_*_224", "--json")
    names = [row["model"] for row in json.loads(out)]
    assert code == 0 and "mobilenet_v1_conv_1.0_224" in names and "mobilenet_v1_1.0_192" not in names


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["profile", "nope"], "model name 'nope' is unknown"),
        (["profile", "mobilenet_v1_1.0_224", "--width-mult", "0"], "width_mult must be a number > 0"),
        (["profile", "mobilenet_v1_1.0_224", "--resolution", "16"], "resolution must be an integer >= 32"),
        (["profile"], "model is required"),
        (["profile", "--grid", "mobilenet_v1_1.0_224"], "--grid takes no model"),
        (["list", "zzz*"], "matches no model"),
    ],
)
def test_errors_are_one_line(cli: Cli, argv: list[str], fragment: str) -> None:
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_console_script_has_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mobilenets", "profile", "mobilenet_v1_1.0_224", "--width-mult", "-1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "width_mult" in proc.stderr


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["profile", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for option in ("--width-mult", "--resolution", "--per-layer", "--json", "--grid"):
        assert option in out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_a_described_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and f"usage: mobilenets {command}" in out and "--" in out
    assert len(out.split("\n\n")[1].split()) > len(COMMANDS[command][1].split())  # the full description


def test_top_level_help_lists_commands_without_importing_torch() -> None:
    script = "import sys\nfrom mobilenets.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    script += "print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().endswith("False")
    assert all(f"{name} " in proc.stdout for name in COMMANDS)


def test_unknown_command_is_refused(cli: Cli) -> None:
    with pytest.raises(SystemExit) as info:
        cli("fly")
    assert info.value.code == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import mobilenets

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"mobilenets {mobilenets.__version__}"


def test_closed_pipe_ends_quietly() -> None:
    # `mobilenets list --json | head -1`: the reader leaves after one line.
    proc = subprocess.run(
        f"{sys.executable} -m mobilenets list --json | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout.strip() == "["
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            OSError(28, "No space left on device", "/data/run/last.safetensors"),
            "No space left on device: '/data/run/last.safetensors'",
        ),
        (PermissionError(13, "Permission denied", "/ro/eval.png"), "Permission denied: '/ro/eval.png'"),
        (ValueError("width_mult must be a number > 0"), "width_mult must be a number > 0"),
        (RuntimeError("first line\nsecond line"), "first line"),
    ],
)
def test_errors_are_described_in_one_line(error: BaseException, line: str) -> None:
    from mobilenets.cli import describe_error

    assert describe_error(error) == line


def test_system_errors_are_one_line(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilenets.cli import models

    def full_disk(_args: object) -> int:
        raise OSError(28, "No space left on device", "/data/out.json")

    monkeypatch.setattr(models, "run", full_disk)
    code, out, err = cli("list")
    assert code == 2 and out == ""
    assert err == "mobilenets list: error: No space left on device: '/data/out.json'\n"


def test_ctrl_c_is_one_line(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilenets.cli import models

    def interrupted(_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "run", interrupted)
    code, _, err = cli("list")
    assert code == 130 and err == "mobilenets list: interrupted\n"


def test_options_before_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--bogus", "list"])
    assert info.value.code == 2 and "unrecognized arguments before list: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--version", "list"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("mobilenets ")


def test_options_may_come_between_positionals(cli: Cli) -> None:
    code, out, _ = cli("list", "--json", "mobilenet_v1_*_224")
    assert code == 0 and all(row["model"].endswith("_224") for row in json.loads(out))


@pytest.mark.parametrize(
    ("argv", "use"),
    [
        (["train", "--model", "ssdlite320_mobilenet_v2_0.25", "--epochs", "1"], "mobilenets detect train/eval/predict"),
        (["predict", "ssdlite320_mobilenet_v2_0.25", "photo.jpg"], "mobilenets detect train/eval/predict"),
        (["detect", "train", "--model", "mobilenet_v1_0.25_128"], "mobilenets train/eval/predict"),
    ],
)
def test_a_model_of_another_task_is_one_line_naming_its_commands(cli: Cli, argv: list[str], use: str) -> None:
    code, _, err = cli(*argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"use `{use}`" in err, err
