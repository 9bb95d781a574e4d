"""``lightning_deepfeat.validation``: accepted values come back normalised, rejected ones raise one message form.

Also: a choice typed as ``Literal`` is refused by the CLI when it parses, listing the allowed values.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import pytest

from _scaling_helpers import cli_error
from lightning_deepfeat.validation import (
    check_bool,
    check_callable,
    check_choice,
    check_dropout,
    check_each,
    check_instance,
    check_int,
    check_ints,
    check_number,
    check_pair,
    check_path,
    check_patterns,
    check_probability,
    check_shape,
    check_str,
    choices_of,
    fail,
)


def _raises(message: str):
    """``pytest.raises(ValueError)`` for exactly ``message`` (the whole text, not a search)."""
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


# ---------------------------------------------------------------------------- message form
def test_fail_builds_the_one_message_form():
    assert str(fail("x", "an int", 2.5)) == "`x` must be an int, got 2.5."
    assert str(fail("x", "an int", "a", hint="why")) == "`x` must be an int (why), got 'a'."
    assert isinstance(fail("x", "y", 1), ValueError)


# ---------------------------------------------------------------------------- bool
@pytest.mark.parametrize("value", [True, False])
def test_check_bool_accepts(value):
    assert check_bool("flag", value) is value


@pytest.mark.parametrize("value", [0, 1, "yes", "true", None, 1.0])
def test_check_bool_rejects(value):
    with _raises(f"`flag` must be True or False, got {value!r}."):
        check_bool("flag", value)


# ---------------------------------------------------------------------------- int
@pytest.mark.parametrize(
    ("kwargs", "value", "expected"),
    [
        ({}, -3, -3),
        ({"low": 1}, 1, 1),
        ({"low": 0}, 0, 0),
        ({"low": 1, "high": 32}, 32, 32),
        ({"low": 1, "allow_none": True}, None, None),
    ],
)
def test_check_int_accepts(kwargs, value, expected):
    result = check_int("n", value, **kwargs)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({"low": 1}, 0, "`n` must be a positive int, got 0."),
        ({"low": 1}, 2.5, "`n` must be a positive int, got 2.5."),
        ({"low": 1}, True, "`n` must be a positive int, got True."),
        ({"low": 1}, "3", "`n` must be a positive int, got '3'."),
        ({"low": 1}, None, "`n` must be a positive int, got None."),
        ({"low": 0}, -1, "`n` must be an int >= 0, got -1."),
        ({"low": 2, "hint": "two classes at least"}, 1, "`n` must be an int >= 2 (two classes at least), got 1."),
        ({"low": 1, "high": 32}, 33, "`n` must be an int in [1, 32], got 33."),
        ({"high": 5}, 6, "`n` must be an int <= 5, got 6."),
        ({}, 1.0, "`n` must be an int, got 1.0."),
        ({"low": 1, "allow_none": True}, 0, "`n` must be a positive int or None, got 0."),
        (
            {"low": 0, "allow_none": True, "hint": "None: no limit"},
            -2,
            "`n` must be an int >= 0 or None (None: no limit), got -2.",
        ),
    ],
)
def test_check_int_rejects(kwargs, value, message):
    with _raises(message):
        check_int("n", value, **kwargs)


# ---------------------------------------------------------------------------- number
@pytest.mark.parametrize(
    ("kwargs", "value", "expected"),
    [
        ({}, 3, 3.0),
        ({}, -1e300, -1e300),
        ({"low": 0.0}, 0, 0.0),
        ({"low": 1.0, "low_open": True}, 1.5, 1.5),
        ({"low": 0.0, "high": 1.0}, 1, 1.0),
        ({"low": 0.0, "high": 1.0, "high_open": True}, 0.999, 0.999),
        ({"low": 0.0, "allow_none": True}, None, None),
    ],
)
def test_check_number_accepts(kwargs, value, expected):
    result = check_number("x", value, **kwargs)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({}, float("nan"), "`x` must be a finite number, got nan."),
        ({}, float("inf"), "`x` must be a finite number, got inf."),
        ({}, True, "`x` must be a finite number, got True."),
        ({}, "1", "`x` must be a finite number, got '1'."),
        ({"low": 0.0}, -0.5, "`x` must be a finite number >= 0, got -0.5."),
        ({"low": 1.0, "low_open": True}, 1, "`x` must be a finite number > 1, got 1."),
        ({"low": 0.0, "low_open": True}, 0.0, "`x` must be a finite number > 0, got 0.0."),
        ({"high": 2.5, "high_open": True}, 2.5, "`x` must be a finite number < 2.5, got 2.5."),
        ({"high": 2.5}, 3, "`x` must be a finite number <= 2.5, got 3."),
        ({"low": 0.0, "high": 1.0}, 1.5, "`x` must be a finite number in [0, 1], got 1.5."),
        (
            {"low": 0.0, "high": 1.0, "low_open": True, "high_open": True},
            0,
            "`x` must be a finite number in (0, 1), got 0.",
        ),
        ({"low": 1e-8}, 0.0, "`x` must be a finite number >= 1e-08, got 0.0."),
        (
            {"low": 0.0, "low_open": True, "allow_none": True, "hint": "None: the factory's own"},
            -1,
            "`x` must be a finite number > 0 or None (None: the factory's own), got -1.",
        ),
    ],
)
def test_check_number_rejects(kwargs, value, message):
    with _raises(message):
        check_number("x", value, **kwargs)


# ---------------------------------------------------------------------------- probability and dropout
@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (0.25, 0.25), (1, 1.0), (1.0, 1.0)])
def test_check_probability_accepts_the_closed_interval(value, expected):
    result = check_probability("p", value)
    assert result == expected and isinstance(result, float)


@pytest.mark.parametrize("value", [-0.1, 1.0000001, float("nan"), True, "0.5", None])
def test_check_probability_rejects(value):
    with _raises(f"`p` must be a probability in [0, 1], got {value!r}."):
        check_probability("p", value)


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (0.5, 0.5), (0.999, 0.999)])
def test_check_dropout_accepts_probabilities_below_one(value, expected):
    result = check_dropout("dropout", value)
    assert result == expected and isinstance(result, float)


@pytest.mark.parametrize("value", [1, 1.0, -0.1, 1.5, float("nan"), False, "0.5"])
def test_check_dropout_rejects_one_and_everything_else_outside(value):
    with _raises(f"`dropout` must be a dropout probability in [0, 1), got {value!r}."):
        check_dropout("dropout", value)


# ---------------------------------------------------------------------------- str, choice, instance, callable
def test_check_str():
    assert check_str("monitor", "val_error") == "val_error"
    assert check_str("monitor", None, allow_none=True) is None
    with _raises("`monitor` must be a non-empty str (a logged key), got ''."):
        check_str("monitor", "", hint="a logged key")
    with _raises("`monitor` must be a non-empty str or None, got 3."):
        check_str("monitor", 3, allow_none=True)


Mode = Literal["min", "max"]


def test_choices_of_reads_literal_types_and_sequences():
    assert choices_of(Mode) == ("min", "max")
    assert choices_of(Mode | None) == ("min", "max", None)
    assert choices_of(["a", "b"]) == ("a", "b")
    with pytest.raises(TypeError, match="choices must be a Literal"):
        choices_of(str)


@pytest.mark.parametrize("choices", [Mode, ("min", "max"), ["min", "max"]])
def test_check_choice(choices):
    assert check_choice("mode", "max", choices) == "max"
    with _raises("`mode` must be one of 'min', 'max', got 'mx'."):
        check_choice("mode", "mx", choices)
    with _raises("`mode` must be one of 'min', 'max', got None."):
        check_choice("mode", None, choices)


def test_check_choice_compares_types_too():
    assert check_choice("k", 1, Literal[1, 2]) == 1
    with _raises("`k` must be one of 1, 2, got True."):
        check_choice("k", True, Literal[1, 2])
    with _raises("`k` must be one of 1, 2, got 1.0."):
        check_choice("k", 1.0, Literal[1, 2])
    assert check_choice("m", None, Mode | None) is None


def test_check_instance_names_the_type_received():
    obj = object()
    assert check_instance("x", obj, object, what="an object") is obj
    assert check_instance("x", None, int, what="an int", allow_none=True) is None
    with _raises("`features` must be an nn.Module, got str."):
        check_instance("features", "ConvNet", (int, float), what="an nn.Module")
    with _raises("`features` must be an nn.Module or None, got list."):
        check_instance("features", [], int, what="an nn.Module", allow_none=True)


def test_check_callable():
    assert check_callable("f", len) is len
    assert check_callable("f", None, allow_none=True) is None
    with _raises("`f` must be a callable, got 3."):
        check_callable("f", 3)
    with _raises("`optimizer` must be a callable taking the parameters, got 0.01."):
        check_callable("optimizer", 0.01, what="a callable taking the parameters")


# ---------------------------------------------------------------------------- path
def test_check_path(tmp_path):
    assert check_path("dirpath", "out") == Path("out")
    assert check_path("dirpath", tmp_path) == tmp_path
    assert isinstance(check_path("dirpath", os.fspath(tmp_path)), Path)
    assert check_path("dirpath", None, allow_none=True) is None
    with _raises("`dirpath` must be a path, got 3."):
        check_path("dirpath", 3)
    with _raises("`dirpath` must be a directory path or None (None: trainer.log_dir), got ''."):
        check_path("dirpath", "", kind="directory", allow_none=True, hint="None: trainer.log_dir")
    with _raises("`output` must be a file path, got None."):
        check_path("output", None, kind="file")


# ---------------------------------------------------------------------------- sequences
@pytest.mark.parametrize(
    ("kwargs", "value", "expected"),
    [
        ({"low": 1}, [8, 4], (8, 4)),
        ({"low": 1}, (), ()),
        ({"low": 0}, range(3), (0, 1, 2)),
        ({"allow_int": True}, -1, (-1,)),
        ({"low": 1, "allow_none": True}, None, None),
    ],
)
def test_check_ints_accepts(kwargs, value, expected):
    assert check_ints("widths", value, **kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({"low": 1}, (8, 0), "`widths` must be a sequence of positive ints, got (8, 0)."),
        ({"low": 1}, [8, True], "`widths` must be a sequence of positive ints, got [8, True]."),
        ({"low": 1}, 8, "`widths` must be a sequence of positive ints, got 8."),
        ({"low": 1}, "88", "`widths` must be a sequence of positive ints, got '88'."),
        ({"low": 1, "non_empty": True}, [], "`widths` must be a non-empty sequence of positive ints, got []."),
        ({"low": 0}, [-1], "`widths` must be a sequence of ints >= 0, got [-1]."),
        ({}, [1.5], "`widths` must be a sequence of ints, got [1.5]."),
        (
            {"allow_int": True, "allow_none": True},
            "x",
            "`widths` must be an int or a sequence of ints or None, got 'x'.",
        ),
        (
            {"low": 1, "hint": "one per layer"},
            [0],
            "`widths` must be a sequence of positive ints (one per layer), got [0].",
        ),
    ],
)
def test_check_ints_rejects(kwargs, value, message):
    with _raises(message):
        check_ints("widths", value, **kwargs)


def test_check_shape():
    assert check_shape("input_shape", [1, 28, 28]) == (1, 28, 28)
    with _raises("`input_shape` must be a non-empty sequence of positive ints (such as (1, 28, 28)), got (1, 0, 8)."):
        check_shape("input_shape", (1, 0, 8))
    with _raises("`input_shape` must be a non-empty sequence of positive ints (such as (1, 28, 28)), got ()."):
        check_shape("input_shape", ())


@pytest.mark.parametrize(("value", "expected"), [(4, (4, 4)), ((2, 3), (2, 3)), ([0, 1], (0, 1))])
def test_check_pair_accepts(value, expected):
    assert check_pair("shift", value) == expected


@pytest.mark.parametrize(
    ("value", "low", "allowed"),
    [
        (-1, 0, "an int >= 0"),
        ((1, 2, 3), 0, "an int >= 0"),
        ((1, -1), 0, "an int >= 0"),
        (True, 0, "an int >= 0"),
        ("22", 0, "an int >= 0"),
        (0, 1, "a positive int"),
        ((2, 0), 1, "a positive int"),
    ],
)
def test_check_pair_rejects(value, low, allowed):
    with _raises(f"`shift` must be {allowed} or a pair of them (y, x), got {value!r}."):
        check_pair("shift", value, low=low)


def test_check_patterns():
    assert check_patterns("include", None) == []
    assert check_patterns("include", "features.*") == ["features.*"]
    assert check_patterns("include", ("a.*", "b")) == ["a.*", "b"]
    for bad in ([3], [""], 3, ["ok", None]):
        with _raises(
            f"`include` must be a list of non-empty fnmatch patterns over parameter names "
            f"(such as ['features.*']), got {bad!r}."
        ):
            check_patterns("include", bad)


def test_check_each_names_the_element():
    assert check_each("min_lr", [0, 0.5], check_number, low=0.0) == [0.0, 0.5]
    with _raises("`min_lr[1]` must be a finite number >= 0, got -1."):
        check_each("min_lr", [0, -1], check_number, low=0.0)


# ---------------------------------------------------------------------------- Literal choices at parse time
@pytest.mark.parametrize(
    ("args", "option", "allowed", "bad"),
    [
        (
            ["--trainer.callbacks+=DivideLROnPlateau", "--trainer.callbacks.mode", "mx"],
            "--trainer.callbacks.mode",
            ["'min'", "'max'"],
            "'mx'",
        ),
        (
            ["--trainer.callbacks+=DivideLROnPlateau", "--trainer.callbacks.threshold_mode", "relative"],
            "--trainer.callbacks.threshold_mode",
            ["'rel'", "'abs'"],
            "'relative'",
        ),
        (
            ["--model.init_args.features.init_args.activation", "swishy"],
            "activation",
            ["'relu'", "'gelu'", "'tanh'", "'sigmoid'", "'leaky_relu'", "'elu'"],
            "'swishy'",
        ),
    ],
    ids=["plateau-mode", "plateau-threshold_mode", "convnet-activation"],
)
def test_cli_refuses_a_bad_choice_when_it_parses(tmp_path, monkeypatch, args, option, allowed, bad):
    monkeypatch.chdir(tmp_path)
    text = cli_error(["fit", "--config", "digits", *args])
    error = text.splitlines()[0]  # one line (then a pointer to --help/--debug), not jsonargparse's tree of unions
    assert "--help" in text and len(text.splitlines()) <= 2, text
    assert option in error and "must be one of" in error and error.endswith(f", got {bad}."), text
    assert all(value in error for value in allowed), text
    assert "null" not in error, text  # None is not one of the choices
    assert not (tmp_path / "lightning_logs").exists()  # refused before any run started


def test_the_parse_time_message_matches_the_constructor_message():
    """A Python caller (who bypasses the parser) is told the same allowed values."""
    from lightning_deepfeat.callbacks import DivideLROnPlateau

    with _raises("`mode` must be one of 'min', 'max', got 'mx'."):
        DivideLROnPlateau(mode="mx")
    with _raises("`threshold_mode` must be one of 'rel', 'abs', got 'relative'."):
        DivideLROnPlateau(threshold_mode="relative")


def test_condense_parse_error_lists_the_values_of_a_literal():
    """On jsonargparse's own message (made here, so an upstream rewording fails this test)."""
    from jsonargparse import ArgumentParser

    from lightning_deepfeat.cli.errors import condense_parse_error

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--mode", type=Literal["min", "max"], default="min")
    parser.add_argument("--maybe", type=Literal["rel", "abs"] | None, default=None)
    for args, expected in [
        (["--mode", "mx"], "`--mode` must be one of 'min', 'max', got 'mx'."),
        (["--maybe", "x"], "`--maybe` must be one of 'rel', 'abs' or null, got 'x'."),
    ]:
        with pytest.raises(Exception) as info:
            parser.parse_args(args)
        assert condense_parse_error(str(info.value)) == expected


def test_cli_refuses_a_bad_choice_in_a_yaml_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.yaml"
    config.write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning_deepfeat.callbacks.DivideLROnPlateau\n"
        "      init_args:\n        mode: mx\n"
    )
    error = cli_error(["fit", "--config", "digits", "--config", str(config)]).splitlines()[0]
    assert error.endswith("`--trainer.callbacks.mode` must be one of 'min', 'max', got 'mx'."), error
    assert not (tmp_path / "lightning_logs").exists()
