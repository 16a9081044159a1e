"""Every --slo flag reads the same grammar: replay's and evaluate's parsers agree on durations and errors."""

import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.evaluation.cli import parse_slo as evaluate_slo
from burstpilot.loadtest import parse_slo as replay_slo
from burstpilot.slo import SLO
from burstpilot.units import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2s", 2.0),
        ("100ms", 0.1),
        ("250us", 2.5e-4),
        ("1.5", 1.5),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text, "x") == pytest.approx(seconds)


def test_replay_and_evaluate_read_the_same_slo():
    text = "ttft=1.5s, tpot=80ms"
    assert replay_slo(text) == evaluate_slo(text) == SLO(ttft_s=1.5, tpot_s=0.08)
    # replay judges only the objectives given; a pool needs both latency targets, so evaluate fills in defaults
    assert replay_slo("ttft=1s") == SLO(ttft_s=1.0)
    assert evaluate_slo("ttft=1s") == SLO(ttft_s=1.0, tpot_s=0.1)


@pytest.mark.parametrize("parse", [replay_slo, evaluate_slo])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("latency=2s", "'latency=2s'"),
        ("ttft=fast", "--slo ttft: 'fast' is not a duration"),
        ("", "no objective"),
    ],
)
def test_errors_name_the_part(parse, text, message):
    with pytest.raises(BurstpilotError, match="--slo") as err:
        parse(text)
    assert message in str(err.value)


def test_attainment_is_a_number():
    assert evaluate_slo("ttft=2s,attainment=0.995").attainment == 0.995
    with pytest.raises(BurstpilotError, match="attainment"):
        replay_slo("ttft=2s,attainment=1.5")
    with pytest.raises(BurstpilotError, match="'high' is not a number"):
        evaluate_slo("attainment=high")
    with pytest.raises(BurstpilotError, match="attainment"):
        replay_slo("attainment=0.99")
