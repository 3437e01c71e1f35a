"""`vgg bench`: the command and its flags."""

import pytest

from vgg.cli import COMMANDS, build_parser


def test_bench_command_is_registered():
    assert "bench" in COMMANDS
    args = build_parser().parse_args(["bench", "--quick", "--only", "inference"])
    assert args.quick and args.only == ["inference"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--only", "nothing"])
