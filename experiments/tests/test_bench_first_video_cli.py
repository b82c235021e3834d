"""``bench_first_video --cli``: variants of the command are parsed into arguments and environment, bad ones are
refused by name."""

import pytest

from experiments.bench_first_video import main, parse_cli_variant


def test_a_variant_splits_into_arguments_and_environment():
    name, args, env = parse_cli_variant("after-load-switch=--vae-warmup after-load JAX_VDIT_SWITCH_INTERVAL=0.001")
    assert name == "after-load-switch"
    assert args == ["--vae-warmup", "after-load"] and env == {"JAX_VDIT_SWITCH_INTERVAL": "0.001"}
    assert parse_cli_variant("plain=") == ("plain", [], {})
    assert parse_cli_variant("x=--attention=1:7") == ("x", ["--attention=1:7"], {})  # a flag, not a variable


@pytest.mark.parametrize("bad", ["no-equals-sign", "=--flag", "bad name=--flag"])
def test_a_malformed_variant_is_refused_before_any_work(bad, capsys):
    with pytest.raises(SystemExit):
        main(["--size", "tiny", "--cli", "--cli-variant", bad])
    assert "CLI variant is NAME=ARGS" in capsys.readouterr().err
