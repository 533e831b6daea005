"""The configs for running btcpulse beyond one machine, checked without SSH, a cloud or Kubernetes:

* ray_cluster.yaml (AWS: head, CPU and GPU node types) and cluster/ray_cluster.onprem.yaml (local
  provider) validate against Ray's own schema and survive the launcher's own preparation and
  validation. The launcher's AWS preparation needs neither credentials nor the network; only
  `ray up`'s later bootstrap step calls AWS.
* cluster/k8s: the RayService's serveConfigV2 is a valid Serve config whose import paths build
  Serve applications here (no Ray running). rayVersion is the installed Ray. The pod templates are
  valid Kubernetes objects (kubernetes-validate's schemas, when it is installed). Every setting
  in btcpulse.env is a real field of BtcpulseSettings.
* serve/cluster_app.py: the supervisor's loop and its driver process.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import shlex
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from pydantic import AliasChoices, ValidationError
from pydantic_settings import SettingsError
from ray import serve
from ray._common.utils import import_attr
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve._private.build_app import build_app
from ray.serve.schema import ServeDeploySchema

from cluster.settings import BtcpulseSettings
from serve import cluster_app
from serve.cluster_app import DriverProcess, SupervisorArgs, build, build_supervisor, supervise

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "ray_cluster.yaml"
ONPREM = ROOT / "cluster" / "ray_cluster.onprem.yaml"
K8S = ROOT / "cluster" / "k8s"
ENV_FILE = K8S / "btcpulse.env"
SERVE_CONFIG = K8S / "serve-config.yaml"
RAYSERVICE = K8S / "rayservice.yaml"
KUSTOMIZATION = K8S / "kustomization.yaml"
DOCKERFILE = K8S / "Dockerfile"
# The custom resource only the head node has (the Serve config pins replicas with it).
HEAD_RESOURCE = "btcpulse_head"
# Variables of the libraries, not btcpulse settings, that btcpulse.env may set as well.
LIBRARY_ENV = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM"}


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines as kustomize's configMapGenerator reads them (and the launcher's start
    commands do): blank lines and comments skipped, the value is the rest of the line as it is."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=value: {line!r}"
        out[key] = value
    return out


def setting_env_names() -> dict[str, str]:
    """Every environment name BtcpulseSettings reads -> its field."""
    names: dict[str, str] = {}
    prefix = BtcpulseSettings.model_config.get("env_prefix", "")
    for field, info in BtcpulseSettings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                assert isinstance(choice, str)
                names[choice.upper()] = field
        elif isinstance(alias, str):
            names[alias.upper()] = field
        else:
            names[f"{prefix}{field}".upper()] = field
    return names


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> BtcpulseSettings:
    """BtcpulseSettings() in an environment holding only ``env`` of btcpulse's names."""
    known = setting_env_names()
    for name in list(os.environ):
        if name.upper() in known:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return BtcpulseSettings()


@pytest.fixture(scope="module")
def ray_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text()
    )
    return schema


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return _load(CONFIG)


@pytest.fixture(scope="module")
def onprem() -> dict[str, Any]:
    return _load(ONPREM)


@pytest.fixture(scope="module")
def rayservice() -> dict[str, Any]:
    return _load(RAYSERVICE)


@pytest.fixture(scope="module")
def serve_config(rayservice: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    return loaded


def _fits(request: dict[str, float], resources: dict[str, float]) -> bool:
    return all(resources.get(name, 0) >= amount for name, amount in request.items() if amount > 0)


def _analysis_request(s: BtcpulseSettings) -> dict[str, float]:
    """What one analysis actor asks of the cluster (actors/pool.py)."""
    return {"CPU": s.analysis_num_cpus, "GPU": s.analysis_num_gpus, **s.analysis_resources}


def _head_start_resources(onprem_config: dict[str, Any]) -> dict[str, float]:
    """The --resources JSON of the on-prem head's `ray start`."""
    start = next(c for c in onprem_config["head_start_ray_commands"] if "ray start --head" in c)
    words = shlex.split(start.split("ray start", 1)[1].split(";")[0])
    found = [w.split("=", 1)[1] for w in words if w.startswith("--resources=")]
    assert len(found) == 1, start
    resources: dict[str, float] = json.loads(found[0])
    return resources


# --- the Ray cluster launcher configs ----------------------------------------------------------


@pytest.mark.parametrize("path", [CONFIG, ONPREM], ids=["aws", "onprem"])
def test_validates_against_rays_schema(path: Path, ray_schema: dict[str, Any]) -> None:
    jsonschema.validate(_load(path), ray_schema)


@pytest.mark.parametrize("path", [CONFIG, ONPREM], ids=["aws", "onprem"])
def test_the_launcher_prepares_and_accepts_it(path: Path) -> None:
    raw = _load(path)
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    if raw["provider"]["type"] == "local":
        assert prepared["max_workers"] == len(raw["provider"]["worker_ips"])
    else:
        assert raw["provider"]["type"] == "aws"
        types = prepared["available_node_types"]
        assert prepared["head_node_type"] == "head"
        assert types["head"]["max_workers"] == 0
        assert sum(t.get("min_workers", 0) for t in types.values()) <= prepared["max_workers"]
        # The shared setup runs on both kinds of node, the head's own part on the head only.
        assert prepared["head_setup_commands"][: len(raw["setup_commands"])] == raw["setup_commands"]
        assert prepared["worker_setup_commands"] == raw["setup_commands"]


def test_the_aws_node_types_have_the_expected_resources(config: dict[str, Any]) -> None:
    types = config["available_node_types"]
    assert set(types) == {"head", "cpu", "gpu"}
    head, cpu, gpu = types["head"]["resources"], types["cpu"]["resources"], types["gpu"]["resources"]
    assert head.get("CPU") == 0 and head.get("GPU", 0) == 0 and head.get(HEAD_RESOURCE) == 1
    assert cpu["CPU"] >= 2 and cpu.get("GPU", 0) == 0 and HEAD_RESOURCE not in cpu
    assert gpu["GPU"] >= 1 and gpu["CPU"] >= 1 and HEAD_RESOURCE not in gpu
    # NVIDIA instances for the GPU type (g5: A10G, g6: L4), general-purpose ones for the CPU type.
    assert re.match(r"g[56]e?\.", types["gpu"]["node_config"]["InstanceType"])
    assert types["cpu"]["node_config"]["InstanceType"].startswith(("m6i.", "m7i."))
    assert types["gpu"]["min_workers"] == 0  # GPU nodes only when an actor asks for a GPU
    for node_type in types.values():
        assert node_type["node_config"]["ImageId"].startswith("ami-")


def test_analysis_actors_never_land_on_the_head(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    types = {name: t["resources"] for name, t in config["available_node_types"].items()}
    env = read_env_file(ENV_FILE)
    cpu_pool = _analysis_request(settings_from(env, monkeypatch))
    assert not _fits(cpu_pool, types["head"])
    assert _fits(cpu_pool, types["cpu"])
    # The GPU variant the env file describes: the autoscaler can only place it on the GPU type.
    gpu_pool = _analysis_request(
        settings_from(
            {**env, "BTCPULSE_ANALYSIS_NUM_GPUS": "1", "BTCPULSE_ANALYSIS_NUM_CPUS": "2"}, monkeypatch
        )
    )
    assert [name for name, res in types.items() if _fits(gpu_pool, res)] == ["gpu"]


def test_the_onprem_head_takes_no_cpu_work(onprem: dict[str, Any]) -> None:
    start = next(c for c in onprem["head_start_ray_commands"] if "ray start --head" in c)
    assert "--num-cpus=0" in start.split()
    assert _head_start_resources(onprem) == {HEAD_RESOURCE: 1}


@pytest.mark.parametrize("path", [CONFIG, ONPREM], ids=["aws", "onprem"])
def test_every_node_installs_the_project_and_reads_the_settings(path: Path) -> None:
    cfg = _load(path)
    setup = cfg["setup_commands"]
    assert any("git clone" in cmd for cmd in setup)
    install = next(cmd for cmd in setup if "make install" in cmd)
    # `-o system-deps` names a real target of the Makefile (skipping it: no Java or Chromium).
    assert "-o system-deps" in install
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^install: system-deps ", makefile, re.M) and re.search(
        r"^system-deps:", makefile, re.M
    )
    # cluster/k8s goes to ~/btcpulse-config on every node; both starts read the settings from it.
    assert cfg["file_mounts"] == {"~/btcpulse-config": "cluster/k8s"}
    assert (ROOT / "cluster" / "k8s" / "btcpulse.env").is_file()
    head = " ".join(cfg["head_start_ray_commands"])
    worker = " ".join(cfg["worker_start_ray_commands"])
    assert "ray start --head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--address=$RAY_HEAD_IP:6379" in worker
    for cmds in (head, worker):
        assert "< ~/btcpulse-config/btcpulse.env" in cmds
    # The head deploys the Serve config that travelled with it.
    assert "serve deploy ~/btcpulse-config/serve-config.yaml" in head


def test_the_start_commands_export_the_settings_verbatim(config: dict[str, Any], tmp_path: Path) -> None:
    """The env-file loop of the start commands, run by bash with `ray start` replaced by `env`:
    every line arrives as it is written, JSON quotes and spaces included."""
    (tmp_path / "btcpulse-config").mkdir()
    (tmp_path / "btcpulse").mkdir()
    lines = (
        ENV_FILE.read_text() + 'BTCPULSE_ANALYSIS_RESOURCES={"btcpulse_gpu": 1}\n# a comment\nLAST=no-newline'
    )
    (tmp_path / "btcpulse-config" / "btcpulse.env").write_text(lines)
    start = next(c for c in config["head_start_ray_commands"] if "ray start --head" in c)
    script = start.split("ulimit")[0] + " env -0"
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, check=True)
    got = dict(kv.split("=", 1) for kv in out.stdout.decode().split("\0") if "=" in kv)
    expected = {
        **read_env_file(ENV_FILE),
        "BTCPULSE_ANALYSIS_RESOURCES": '{"btcpulse_gpu": 1}',
        "LAST": "no-newline",
    }
    assert {k: got.get(k) for k in expected} == expected


def test_a_broken_cluster_config_is_refused(config: dict[str, Any], ray_schema: dict[str, Any]) -> None:
    broken = copy.deepcopy(config)
    broken["provider"]["type"] = 42
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, ray_schema)
    fractional = copy.deepcopy(config)
    fractional["available_node_types"]["gpu"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(fractional, ray_schema)
    unknown_head = copy.deepcopy(config)
    unknown_head["head_node_type"] = "nope"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(unknown_head))


# --- the settings file ---------------------------------------------------------------------


def test_every_name_in_the_env_file_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    env = read_env_file(ENV_FILE)
    known = setting_env_names()
    unknown = sorted(k for k in env if k.upper() not in known and k not in LIBRARY_ENV)
    assert not unknown, f"not settings of BtcpulseSettings: {unknown}"
    for name in ("PULSAR_URL", "PULSAR_ADMIN_URL", "QDRANT_URL", "BTCPULSE_NEWS_PARTITIONS"):
        assert name in env
    # The values validate, and they are what the file says.
    s = settings_from({k: v for k, v in env.items() if k not in LIBRARY_ENV}, monkeypatch)
    assert s.pulsar_url == env["PULSAR_URL"] and s.pulsar_admin_url == env["PULSAR_ADMIN_URL"]
    assert s.qdrant_url == env["QDRANT_URL"]
    assert s.news_partitions == int(env["BTCPULSE_NEWS_PARTITIONS"])
    assert s.qdrant_shards == int(env["BTCPULSE_QDRANT_SHARDS"])
    assert s.analysis_actors < s.pool_max  # the pool can grow with the backlog
    assert s.analysis_resources == json.loads(env["BTCPULSE_ANALYSIS_RESOURCES"])
    # No secrets in a committed file.
    assert not {"QDRANT_API_KEY", "BTCPULSE_QDRANT_API_KEY", "BTCPULSE_API_TOKEN"} & set(env)


def test_a_wrong_setting_in_the_env_file_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    env = read_env_file(ENV_FILE)
    # What a shell's quote removal would have made of {"gpu": 1}: not JSON.
    with pytest.raises(SettingsError):
        settings_from({**env, "BTCPULSE_ANALYSIS_RESOURCES": "{gpu: 1}"}, monkeypatch)
    with pytest.raises(ValidationError):
        settings_from({**env, "BTCPULSE_ANALYSIS_RESOURCES": '{"gpu": "one"}'}, monkeypatch)
    with pytest.raises(ValidationError):
        settings_from({**env, "BTCPULSE_NEWS_PARTITIONS": "0"}, monkeypatch)


# --- KubeRay -----------------------------------------------------------------------------------


def _groups(rayservice: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = {"head": cluster["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in cluster["workerGroupSpecs"]})
    return groups


def _containers(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for g in _groups(rayservice).values() for c in g["template"]["spec"]["containers"]]


def test_the_rayservice_runs_the_pinned_ray(rayservice: dict[str, Any]) -> None:
    assert rayservice["apiVersion"] == "ray.io/v1" and rayservice["kind"] == "RayService"
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(p for p in pins if p.startswith("ray[")).split("==")[1]
    assert rayservice["spec"]["rayClusterConfig"]["rayVersion"] == ray.__version__ == pinned
    base = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.M)
    assert base and base.group(1).startswith(f"rayproject/ray:{ray.__version__}-py311")


def test_the_rayservice_groups(rayservice: dict[str, Any]) -> None:
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    groups = _groups(rayservice)
    assert set(groups) == {"head", "cpu", "gpu"}
    head = groups["head"]["rayStartParams"]
    assert head["num-cpus"] == "0"
    # KubeRay puts the value into `ray start --resources=...` as it is: the shell unquotes it.
    (resources,) = shlex.split(head["resources"])
    assert json.loads(resources) == {HEAD_RESOURCE: 1}
    for name in ("cpu", "gpu"):
        g = groups[name]
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert "num-cpus" not in g["rayStartParams"]  # from the container's limits
    assert groups["gpu"]["minReplicas"] == 0 and groups["cpu"]["minReplicas"] >= 1
    for name, g in groups.items():
        (container,) = g["template"]["spec"]["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        gpus = int(limits.get("nvidia.com/gpu", 0))
        assert (gpus >= 1) == (name == "gpu"), name
        assert requests.get("nvidia.com/gpu") == limits.get("nvidia.com/gpu")  # GPUs: requests = limits


def test_the_pods_run_one_tagged_image(rayservice: dict[str, Any]) -> None:
    images = {c["image"] for c in _containers(rayservice)}
    assert len(images) == 1
    (image,) = images
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag and tag not in ("", "latest") and "@" not in image


def test_the_pods_get_the_settings(rayservice: dict[str, Any]) -> None:
    kustomization = _load(KUSTOMIZATION)
    assert "rayservice.yaml" in kustomization["resources"]
    (generated,) = kustomization["configMapGenerator"]
    assert generated["envs"] == [ENV_FILE.name]
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True
    known = setting_env_names()
    for container in _containers(rayservice):
        refs = container["envFrom"]
        assert {"configMapRef": {"name": generated["name"]}} in refs
        secrets = [r["secretRef"] for r in refs if "secretRef" in r]
        assert secrets == [{"name": "btcpulse-secrets", "optional": True}]
        for var in container.get("env", []):
            assert var["name"].upper() in known or var["name"] in LIBRARY_ENV, var["name"]


def test_serve_config_v2_is_a_serve_config(serve_config: dict[str, Any]) -> None:
    ServeDeploySchema.model_validate(serve_config)
    # The launcher deploys the same config from its own file.
    assert serve_config == _load(SERVE_CONFIG)
    routes = {a["name"]: a["route_prefix"] for a in serve_config["applications"]}
    assert routes == {"btcpulse": "/", "btcpulse-pipeline": None}


def test_serve_config_v2_import_paths_build_applications(serve_config: dict[str, Any]) -> None:
    """What Serve does with each application of the config: import the path, call the builder
    with ``args``. Then each deployment the config names exists in the application."""
    for entry in serve_config["applications"]:
        builder = import_attr(entry["import_path"])
        app = call_user_app_builder_with_args_if_necessary(builder, entry.get("args", {}))
        assert isinstance(app, serve.Application)
        built = build_app(app, name=entry["name"])
        names = {d.name for d in built.deployments}
        assert {d["name"] for d in entry.get("deployments", [])} <= names
        for deployment in built.deployments:
            options = deployment.ray_actor_options or {}
            assert options.get("num_cpus") == 0  # the head has no CPUs to give


def test_every_head_has_the_resource_the_serve_config_pins_to(
    serve_config: dict[str, Any], config: dict[str, Any], onprem: dict[str, Any], rayservice: dict[str, Any]
) -> None:
    wanted: set[str] = set()
    for entry in serve_config["applications"]:
        for d in entry.get("deployments", []):
            wanted |= set(d.get("ray_actor_options", {}).get("resources", {}))
    assert wanted == {HEAD_RESOURCE}
    head_start = _groups(rayservice)["head"]["rayStartParams"]["resources"]
    heads = {
        "aws": config["available_node_types"]["head"]["resources"],
        "onprem": _head_start_resources(onprem),
        "k8s": json.loads(shlex.split(head_start)[0]),
    }
    for where, resources in heads.items():
        assert wanted <= set(resources), where
    assert not any(
        HEAD_RESOURCE in t["resources"] for n, t in config["available_node_types"].items() if n != "head"
    )


def test_a_broken_serve_config_fails(serve_config: dict[str, Any]) -> None:
    no_path = copy.deepcopy(serve_config)
    del no_path["applications"][0]["import_path"]
    with pytest.raises(ValidationError):
        ServeDeploySchema.model_validate(no_path)
    same_route = copy.deepcopy(serve_config)
    same_route["applications"][1]["route_prefix"] = "/"
    with pytest.raises(ValidationError):
        ServeDeploySchema.model_validate(same_route)
    with pytest.raises(ValidationError):
        build_supervisor({"interval_s": 0})
    with pytest.raises(ValidationError):
        build({"workers": 3})


def _pod_template(group: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name},
        "template": group["template"],
    }


def test_the_pod_templates_are_valid_kubernetes_objects(rayservice: dict[str, Any]) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.utils.latest_version()
    for name, group in _groups(rayservice).items():
        kv.validate(_pod_template(group, f"btcpulse-{name}"), version, strict=True)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "btcpulse-config"},
        "data": read_env_file(ENV_FILE),
    }
    kv.validate(configmap, version, strict=True)


def test_a_broken_pod_template_fails(rayservice: dict[str, Any]) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.utils.latest_version()
    group = copy.deepcopy(_groups(rayservice)["gpu"])
    group["template"]["spec"]["containers"][0]["resources"]["limits"] = "nvidia.com/gpu=1"
    with pytest.raises(kv.ValidationError):
        kv.validate(_pod_template(group, "broken"), version, strict=True)
    typo = copy.deepcopy(_groups(rayservice)["cpu"])
    typo["template"]["spec"]["containers"][0]["envFrom"][0] = {"configMap": {"name": "btcpulse-config"}}
    with pytest.raises(kv.ValidationError):
        kv.validate(_pod_template(typo, "typo"), version, strict=True)


# --- serve/cluster_app.py ------------------------------------------------------------------


def test_the_applications_take_the_settings_of_their_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings_from({"PULSAR_URL": "pulsar://elsewhere:6650", "BTCPULSE_ANALYSIS_MAX_ACTORS": "9"}, monkeypatch)
    (supervisor,) = build_app(build_supervisor({"interval_s": 5}), name="p").deployments
    settings, opts = supervisor.init_args
    assert settings.pulsar_url == "pulsar://elsewhere:6650" and settings.pool_max == 9
    assert opts == SupervisorArgs(interval_s=5)
    assert supervisor.num_replicas == 1 and supervisor.ray_actor_options == {"num_cpus": 0}
    (ingress,) = build_app(build({}), name="b").deployments
    assert ingress.name == "ingress" and ingress.num_replicas == 1


def test_supervise_calls_start_now_and_every_interval_and_survives_failures() -> None:
    calls: list[float] = []
    reports: list[dict[str, Any]] = []
    clock = [0.0]

    def start(settings: BtcpulseSettings) -> dict[str, Any]:
        calls.append(clock[0])
        if len(calls) == 2:
            raise TimeoutError("analysis-0 not ready")
        return {"aggregator": object(), "vector-store": object()}

    def sleep(s: float) -> None:
        clock[0] += s

    supervise(
        start,
        BtcpulseSettings(),
        30,
        should_stop=lambda: len(reports) >= 3,
        report=reports.append,
        sleep=sleep,
        tick_s=7,
    )
    assert calls == [0.0, 30.0, 60.0]
    assert [r["ok"] for r in reports] == [True, False, True]
    assert reports[0]["stages"] == ["aggregator", "vector-store"]
    assert "TimeoutError: analysis-0 not ready" in reports[1]["error"]


def test_supervise_stops_between_rounds() -> None:
    stop_after = [2]
    slept: list[float] = []

    def should_stop() -> bool:
        stop_after[0] -= 1
        return stop_after[0] < 0

    supervise(
        lambda s: {},
        BtcpulseSettings(),
        30,
        should_stop=should_stop,
        report=lambda r: None,
        sleep=slept.append,
    )
    assert slept == [1.0]  # one tick of the wait, then the stop is seen


def test_the_driver_process_gets_the_settings_and_is_restarted(tmp_path: Path) -> None:
    """A stand-in for `python -m serve.cluster_app`: it reads the payload the supervisor writes,
    reports one round and exits, and the supervisor starts another."""
    child = textwrap.dedent(
        """
        import json, pickle, sys
        p = pickle.load(sys.stdin.buffer)
        s = p["settings"]
        print(json.dumps({"ok": True, "stages": [s.pulsar_url, p["opts"]["pipeline"], p["address"]]}))
        print("not json")
        sys.exit(3)
        """
    )
    settings = BtcpulseSettings(state_dir=tmp_path)
    settings = settings.model_copy(update={"pulsar_url": "pulsar://broker:6650"})
    driver = DriverProcess(
        settings,
        SupervisorArgs(interval_s=1, pipeline="fake:start"),
        gcs_address="10.0.0.10:6379",
        parent_pid=os.getpid(),
        command=[sys.executable, "-c", child],
    )
    driver.start()
    try:
        deadline = time.monotonic() + 30
        while driver.status()["starts"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        status = driver.status()
        assert status["starts"] >= 2 and status["exit_codes"][0] == 3
        assert status["last"]["stages"] == ["pulsar://broker:6650", "fake:start", "10.0.0.10:6379"]
        assert driver.watching()
    finally:
        driver.stop()
    driver._thread.join(10)
    assert not driver.watching()


def test_the_driver_payload_keeps_secrets_off_the_command_line(tmp_path: Path) -> None:
    settings = BtcpulseSettings(state_dir=tmp_path, api_token="a-token-of-16-chars-or-more")
    driver = DriverProcess(settings, SupervisorArgs(), gcs_address="h:6379", parent_pid=1)
    assert driver._command == [sys.executable, "-m", "serve.cluster_app"]
    payload = pickle.loads(driver._payload)
    assert payload["settings"].api_token.get_secret_value() == "a-token-of-16-chars-or-more"
    assert payload["opts"] == {"interval_s": 30.0, "pipeline": "cluster.pipeline:start_pipeline"}


def test_the_pipeline_is_imported_only_when_called() -> None:
    """Building the applications imports no actor module (the driver process does)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from serve.cluster_app import build_supervisor; build_supervisor({}); "
            "print(sorted(m for m in sys.modules if m.startswith(('actors', 'cluster.pipeline'))))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
    assert cluster_app.load_pipeline("os.path:join") is os.path.join
