"""The `metrics:` and `telemetry:` sections of agentgw.yaml: the OTLP endpoint rule, and bad values reported
like every other configuration problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgw.configfile import ConfigError
from agentgw.observability import Otlp
from agentgw.settings import load_settings
from tests.support import MOCK_REGISTRY, write_config


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otlp.example.com/v1/traces", "https://otlp.example.com/v1/traces"),
        ("https://gateway.example.com/otlp/v1/traces", "https://gateway.example.com/otlp/v1/traces"),
    ],
)
def test_an_otlp_endpoint_without_a_path_gets_the_traces_path(endpoint: str, url: str) -> None:
    assert Otlp(endpoint=endpoint).traces_url == url


def test_telemetry_and_metrics_mistakes_are_reported_with_their_key_paths(tmp_path: Path) -> None:
    settings = {
        "telemetry": {"enabled": True, "sample_ratio": 2, "otlp": {"endpoint": "grpc://collector:4317"}},
        "metrics": {"public": True, "scrape": "yes"},
    }
    with pytest.raises(ConfigError) as err:
        load_settings(write_config(tmp_path, MOCK_REGISTRY, settings))
    where = {p.path: p.message for p in err.value.problems}
    assert where["telemetry.otlp.endpoint"] == "must be an http:// or https:// URL"
    assert "telemetry.sample_ratio" in where
    assert where["metrics.scrape"] == "unknown key"


def test_otlp_headers_are_interpolated_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTLP_TOKEN", "tok-123")
    settings = {"telemetry": {"otlp": {"headers": {"Authorization": "Bearer ${OTLP_TOKEN}"}}}}
    loaded = load_settings(write_config(tmp_path, MOCK_REGISTRY, settings))
    assert loaded.telemetry.otlp.headers == {"Authorization": "Bearer tok-123"}
    assert (
        loaded.telemetry.enabled is False
        and loaded.metrics.enabled is True
        and loaded.metrics.public is False
    )
