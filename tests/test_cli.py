"""The `ultrasonic` command's habits: --version, defaults in every help, -q anywhere, one-line errors, --debug."""

from __future__ import annotations

import argparse
import io

import pytest

from ultrasonic import __version__, cli


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"ultrasonic {__version__}\n"


def test_every_option_of_every_command_shows_its_default():
    parser = cli._parser()
    missing = []
    for name, command in {"": parser, **subcommands(parser)}.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if not action.option_strings or action.required or \
                    isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if "default" not in formatter._get_help_string(action):
                missing.append(f"{name} {action.option_strings[-1]}")
    assert not missing


def test_train_flags_are_the_config_fields_marked_flag():
    from ultrasonic.config import flag_fields

    train = subcommands(cli._parser())["train"]
    options = {s for a in train._actions for s in a.option_strings}
    for f in flag_fields():
        assert "--" + f.name.replace("_", "-") in options
    assert {"--no-tensorboard", "--allow-leakage", "--drop-duplicates", "--set", "--config", "--resume"} <= options
    help_text = train.format_help()
    assert "(default: 96; seed preset: 224)" in " ".join(help_text.split())  # --image-size


@pytest.mark.parametrize("argv, quiet", [(["train", "D"], False), (["-q", "train", "D"], True),
                                         (["train", "D", "-q"], True), (["train", "-q", "D"], True)])
def test_quiet_before_or_after_the_subcommand(argv, quiet):
    assert cli._parser().parse_args(argv).quiet is quiet


def two_class_folder(root):
    from PIL import Image

    for k, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        Image.linear_gradient("L").resize((32, 32)).rotate(90 * k).save(root / name / "x.png")  # not blank
    return root


def test_quiet_after_the_subcommand_keeps_info_off_the_terminal(tmp_path, capsys):
    data = two_class_folder(tmp_path / "data")  # decodes, logs, then stops: one image per class is too few
    argv = ["train", str(data), "--cache-dir", str(tmp_path / "cache"), "--out"]
    assert cli.main([*argv, str(tmp_path / "loud")]) == 2
    loud = capsys.readouterr().err.splitlines()
    assert cli.main([*argv, str(tmp_path / "quiet"), "-q"]) == 2
    quiet = capsys.readouterr().err.splitlines()
    assert len(loud) > 1 and quiet == loud[-1:] and quiet[0].startswith("error: ")
    assert "data: " in (tmp_path / "quiet" / "train.log").read_text()  # the log file keeps everything


def test_description_lists_every_command():
    parser = cli._parser()
    commands = subcommands(parser)
    assert {"train", "evaluate", "predict", "export", "explain", "serve", "bench", "demo"} <= set(commands)
    for name, command in commands.items():
        assert f"  {name} " in parser.description and command.description in parser.description


def test_a_run_folder_that_cannot_be_made_is_one_line_naming_it(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    code = cli.main(["train", str(tmp_path), "--out", str(blocker / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [f"error: {blocker / 'run'}: Not a directory"]


@pytest.mark.parametrize("how", ["flag", "flag after the command", "environment"])
def test_debug_shows_the_traceback_chain(how, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    argv = ["train", str(tmp_path), "--config", str(bad)]
    if how == "environment":
        monkeypatch.setenv("ULTRASONIC_DEBUG", "1")
    argv = {"flag": ["--debug", *argv], "flag after the command": [*argv, "--debug"]}.get(how, argv)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "yaml.parser.ParserError" in err  # the cause, kept by `raise ... from exc`
    assert "The above exception was the direct cause" in err
    assert "ConfigError: " in err and "bad.yaml: not valid YAML" in err


def test_without_debug_the_same_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    assert cli.main(["train", str(tmp_path), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {bad}: not valid YAML")


def test_out_of_memory_while_decoding_is_one_line_not_a_bad_image(tmp_path, capsys, monkeypatch):
    from PIL import ImageFile

    two_class_folder(tmp_path / "data")

    def no_memory(self):
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    code = cli.main(["train", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "-q",
                     "--cache-dir", str(tmp_path / "cache"), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("error: out of memory while decoding ") and "x.png" in err
    assert "corrupt" not in err and "unreadable" not in err


@pytest.mark.parametrize("setting, tty, chosen", [(None, True, 1), (None, False, 2), (0, True, 0), (2, True, 2),
                                                  (1, False, 1)])
def test_fit_output_is_a_progress_bar_on_a_terminal_unless_set(setting, tty, chosen):
    from ultrasonic.training.fit import fit_verbose

    class Stream(io.StringIO):
        def isatty(self):
            return tty

    assert fit_verbose(setting, Stream()) == chosen
