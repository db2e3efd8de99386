"""The analysis registry (``popdyn.analyses``): an analysis defined outside popdyn (tests/test_outside.py,
whose sweep computes, stores and loads it) has its config section checked before anything runs."""

import pytest

from popdyn import analyses
from popdyn.config import ConfigError, build_sweep
from tests.test_outside import EndSpeedOptions, registered
from tests.test_sweep import config


@pytest.fixture
def end_speed():
    with registered(analysis=True):
        yield analyses.get("end_speed")


def test_an_analysis_section_is_checked_before_anything_runs(end_speed):
    assert build_sweep(config("+end_speed.probes=4")).analyses["end_speed"] == EndSpeedOptions(probes=4)
    with pytest.raises(ConfigError, match="unknown end_speed key 'steps'; allowed: probes"):
        build_sweep(config("+end_speed.steps=3"))
    with pytest.raises(ConfigError, match="end_speed.probes must be an integer ≥ 1, got 0"):
        build_sweep(config("+end_speed.probes=0"))


def test_registry_names_refuse_duplicates_and_unknowns():
    assert "memory" in analyses.names()
    with pytest.raises(ValueError, match="already registered"):
        analyses.register(analyses.get("memory"))
    with pytest.raises(ValueError, match="unknown analysis 'nope'; registered: .*memory"):
        analyses.get("nope")
