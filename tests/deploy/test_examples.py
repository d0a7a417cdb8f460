"""The shipped examples must stay valid: an operator copies them first."""

from pathlib import Path

import pytest

from director.config.node import parse_node_config
from director.config.services import parse_config

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


@pytest.mark.parametrize("path", sorted((EXAMPLES / "multihost").glob("*.yaml")), ids=lambda p: p.name)
def test_node_examples_parse(path: Path) -> None:
    cfg = parse_node_config(path.read_text())
    assert cfg.node_id == path.stem
    assert cfg.sync_tls is not None


def test_services_example_parses() -> None:
    cfg = parse_config((EXAMPLES / "services.yaml").read_text())
    assert len(cfg.services) >= 2
