"""Every numeric option declares its range, and a value outside it is one line.

The walk covers every numeric option of every plugin task, model and criterion
(parsed by fairseq-train's own parser, checked as the plugin checks it when a
fairseq command starts) and of every fairseq-magic subcommand; the
"out-of-range-option" case of test_bad_input.py runs real command lines (exit
status, nothing written).
"""

import dataclasses
import math
import typing

import pytest
from fairseq import options
from fairseq.criterions import CRITERION_DATACLASS_REGISTRY
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import MODEL_DATACLASS_REGISTRY
from fairseq.tasks import TASK_DATACLASS_REGISTRY

from conftest import PLUGIN
from fairseq_magic import cli
from fairseq_magic.errors import MagicError
from fairseq_magic.ranges import RANGE, Interval, check_config, numeric_type, parser_options

# the command line that puts each plugin dataclass in a fairseq-train configuration
SECTIONS = {"task": TASK_DATACLASS_REGISTRY, "model": MODEL_DATACLASS_REGISTRY, "criterion": CRITERION_DATACLASS_REGISTRY}
COMMANDS = {
    ("task", "magic_masked_lm"): ["--task", "magic_masked_lm", "--arch", "magic_supernet_tiny", "--criterion", "magic_mlm"],
    ("task", "magic_electra"): ["--task", "magic_electra", "--criterion", "magic_electra", "--arch", "magic_child"],
    ("model", "magic_supernet"): ["--task", "masked_lm", "--arch", "magic_supernet"],
    ("model", "magic_child"): ["--task", "masked_lm", "--arch", "magic_child"],
    ("criterion", "magic_mlm"): ["--task", "magic_masked_lm", "--arch", "magic_supernet_tiny", "--criterion", "magic_mlm"],
    ("criterion", "magic_electra"): ["--task", "magic_electra", "--arch", "magic_child", "--criterion", "magic_electra"],
    ("criterion", "masked_lm_kd"): ["--task", "masked_lm", "--arch", "magic_child", "--criterion", "masked_lm_kd"],
    ("criterion", "sentence_prediction_kd"): ["--task", "sentence_prediction", "--num-classes", "2", "--arch",
                                              "magic_child", "--criterion", "sentence_prediction_kd"],
}


def plugin_fields():
    """(section, registered name, field, declaring class) of every field a plugin dataclass declares."""
    for section, registry in SECTIONS.items():
        for name, config_class in registry.items():
            if config_class is None or not config_class.__module__.startswith("fairseq_magic"):
                continue
            for f in dataclasses.fields(config_class):
                owner = next(c for c in config_class.__mro__ if f.name in getattr(c, "__annotations__", {}))
                if owner.__module__.startswith("fairseq_magic"):
                    yield section, name, f


def is_number(f) -> bool:
    kinds = set(typing.get_args(f.type)) or {f.type}
    return bool(kinds & {int, float}) and not (isinstance(f.default, str) and f.default.startswith("${"))


NUMERIC = [(s, n, f) for s, n, f in plugin_fields() if is_number(f)]


def test_every_plugin_dataclass_has_a_command_here():
    assert {(s, n) for s, n, _ in plugin_fields()} <= set(COMMANDS)


def test_every_numeric_option_declares_its_range():
    assert len(NUMERIC) > 40
    undeclared = [f"{name}.{f.name}" for _, name, f in NUMERIC if RANGE not in f.metadata]
    assert not undeclared
    for _, _, f in NUMERIC:  # and each default lies inside it
        assert f.default is None or f.default in Interval.parse(f.metadata[RANGE]), f.name


def walk_cases():
    for section, name, f in NUMERIC:
        interval = Interval.parse(f.metadata[RANGE])
        integer = int in (set(typing.get_args(f.type)) or {f.type})
        for value in interval.outside(integer):
            yield pytest.param(section, name, f.name, value, id=f"{name}.{f.name}={value}")


@pytest.mark.parametrize("section,name,field,value", list(walk_cases()))
def test_an_option_outside_its_range_is_one_line(section, name, field, value, data_bin):
    option = "--" + field.replace("_", "-")
    argv = [data_bin, "--user-dir", PLUGIN, "--cpu", *COMMANDS[(section, name)], f"{option}={value}"]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    with pytest.raises(MagicError) as raised:
        check_config(cfg)
    message = str(raised.value)
    assert message.startswith(f"{option} must be ") and message.endswith(f"got {value}") and "\n" not in message


@pytest.mark.parametrize("section,name", sorted(COMMANDS))
def test_the_defaults_are_in_range(section, name, data_bin):
    argv = [data_bin, "--user-dir", PLUGIN, "--cpu", *COMMANDS[(section, name)]]
    check_config(convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv)))


def subcommand_cases():
    for words, parser, action in parser_options(cli.build_parser()):
        if numeric_type(action) is None:
            continue
        interval = getattr(action.type, "interval", None)
        assert interval is not None, f"fairseq-magic {' '.join(words)} {action.option_strings[0]} declares no range"
        required = []  # a value for each positional argument and required option
        for other in parser._actions:
            if not other.option_strings:
                required.append("x")
            elif other.required and other is not action:
                required += [other.option_strings[0], "x"]
        for value in interval.outside(numeric_type(action) is int):
            yield pytest.param([*words, *required, f"{action.option_strings[0]}={value}"], action.option_strings[0],
                               id=f"{' '.join(words)} {action.option_strings[0]}={value}")


@pytest.mark.parametrize("argv,option", list(subcommand_cases()))
def test_a_subcommand_option_outside_its_range_is_one_line(argv, option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fairseq-magic: error: argument {option}: must be "), err
    assert not list(tmp_path.iterdir())


def test_intervals():
    assert Interval.parse("(0, 1]").describe() == "in (0, 1]"
    assert Interval.parse("[0, inf)").describe() == ">= 0"
    assert 0 not in Interval.parse("(0, inf)") and math.inf in Interval.parse("[0, inf]")
    assert math.nan not in Interval.parse("[0, 1]")
    assert Interval.parse("[1, 100]").outside(integer=True) == [0, 101]
    with pytest.raises(ValueError):
        Interval.parse("0..1")


def test_a_task_and_a_model_check_their_own_options_when_built(data_bin):
    """fairseq-hydra-train imports the plugin after its configuration is handed on: the
    plugin's task and model check their options when fairseq builds them."""
    from conftest import build

    with pytest.raises(MagicError, match=r"^--align-lambda must be >= 0, got -1.0$"):
        build(data_bin, "--align-lambda=-1")  # tasks.setup_task, before any data is read
    with pytest.raises(MagicError, match=r"^--dropout must be in \[0, 1\), got 1.5$"):
        build(data_bin, "--dropout=1.5")  # task.build_model
