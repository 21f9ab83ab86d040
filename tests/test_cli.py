"""arcore.cli: the option parser run-experiment.sh and show-results.sh share."""

from __future__ import annotations

import pytest

from arcore import cli

VALUED = {"--top": "top", "--plot": "plot"}
FLAGS = {"--json": "json"}


def test_values_come_after_a_space_or_an_equals_sign_and_flags_stand_alone():
    opts = cli.parse_options(["--top", "3", "--plot=a.svg", "--json"], {"json": False},
                             VALUED, FLAGS)
    assert opts == {"top": "3", "plot": "a.svg", "json": True}


@pytest.mark.parametrize(("argv", "message"), [
    (["--top"], "--top needs a value"),
    (["--frobnicate"], "unknown argument: --frobnicate$"),
    (["--json=yes"], "unknown argument: --json=yes$"),
])
def test_bad_usage_is_one_line_naming_the_option(argv, message):
    with pytest.raises(ValueError, match="^" + message):
        cli.parse_options(argv, {}, VALUED, FLAGS)


def test_an_empty_value_is_refused_only_when_asked():
    assert cli.parse_options(["--plot="], {}, VALUED, FLAGS) == {"plot": ""}
    with pytest.raises(ValueError, match="--plot needs a non-empty value"):
        cli.parse_options(["--plot", ""], {}, VALUED, FLAGS, allow_empty=False)
