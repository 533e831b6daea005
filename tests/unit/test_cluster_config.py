"""ray_cluster.yaml is a configuration the Ray cluster launcher accepts: it validates against
Ray's own schema and survives the launcher's own preparation and validation (dry, no SSH)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[2] / "ray_cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return loaded


def test_validates_against_rays_schema(config: dict[str, Any]) -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)


def test_the_launcher_prepares_and_accepts_it(config: dict[str, Any]) -> None:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "local"
    assert prepared["max_workers"] == len(config["provider"]["worker_ips"])


def test_every_node_installs_the_project_from_its_lock(config: dict[str, Any]) -> None:
    assert any("make install" in cmd for cmd in config["setup_commands"])
    assert any("ray start --head" in cmd for cmd in config["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP:6379" in cmd for cmd in config["worker_start_ray_commands"])


def test_a_broken_config_is_refused(config: dict[str, Any]) -> None:
    broken = copy.deepcopy(config)
    broken["provider"]["type"] = 42
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
