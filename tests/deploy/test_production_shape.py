"""The production shape: the Dockerfile, docker-compose.yml and the Kubernetes manifests in deploy/
agree with the services' contract (command, port, /healthz, one database each) and with each other.

Static checks only: there is no Docker engine or cluster here. `docker-compose config` and
`kubectl kustomize` validate further when those binaries are installed, and are skipped otherwise.
"""

from __future__ import annotations

import base64
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
BASE = ROOT / "deploy" / "base"
OVERLAYS = ROOT / "deploy" / "overlays"

# service -> (package run by `python -m`, HTTP port) — docs/contract.md, "HTTP".
SERVICES = {
    "collections": ("kredit_collections", 8080),
    "invoicing": ("kredit_invoicing", 8081),
    "settlement": ("kredit_settlement", 8082),
    "ledger-posting": ("kredit_ledger_posting", 8083),
}
KAFKA_MIN_SESSION_TIMEOUT_MS = 6000  # Apache Kafka's default group.min.session.timeout.ms

service_names = pytest.mark.parametrize("service", list(SERVICES))


# --- helpers ----------------------------------------------------------------------------------


def as_argv(command: str | list[str] | None) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def as_env(environment: dict[str, Any] | list[str] | None) -> dict[str, str]:
    """Compose accepts a mapping or a list of KEY=VALUE."""
    if environment is None:
        return {}
    if isinstance(environment, dict):
        return {k: "" if v is None else str(v) for k, v in environment.items()}
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment: its env files (in order), then `environment`, which wins."""
    files = service.get("env_file", [])
    env: dict[str, str] = {}
    for name in [files] if isinstance(files, str) else files:
        for line in (COMPOSE_FILE.parent / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
    return env | as_env(service.get("environment"))


def host_and_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# --- docker-compose.yml -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def compose_kafka(compose_services: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    found = [
        (n, s)
        for n, s in compose_services.items()
        if "kafka" in str(s.get("image", "")) and s.get("restart") != "no"  # not the one-shot kafka-init
    ]
    assert len(found) == 1, f"expected one Kafka service, found {[n for n, _ in found]}"
    return found[0]


def compose_postgres(compose_services: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    found = [(n, s) for n, s in compose_services.items() if str(s.get("image", "")).startswith("postgres")]
    assert len(found) == 1, f"expected one PostgreSQL service, found {[n for n, _ in found]}"
    return found[0]


def compose_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a compose service: container path -> host path (relative to the file)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume["target"]
        else:
            source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (COMPOSE_FILE.parent / source).resolve()
    return mounts


def test_compose_runs_the_four_services_from_one_image(compose_services):
    assert set(SERVICES) <= set(compose_services)
    builds = {repr(compose_services[s].get("build")) for s in SERVICES}
    images = {compose_services[s].get("image") for s in SERVICES}
    assert len(builds) == 1 and len(images) == 1, (builds, images)
    build = compose_services["collections"]["build"]
    context, dockerfile = (
        (build, "Dockerfile") if isinstance(build, str) else (build["context"], build.get("dockerfile", "Dockerfile"))
    )
    assert (COMPOSE_FILE.parent / context / dockerfile).resolve() == DOCKERFILE


@service_names
def test_compose_service_runs_its_own_package(compose_services, service):
    package, _ = SERVICES[service]
    assert as_argv(compose_services[service].get("command")) == ["python", "-m", package]


def test_compose_services_each_use_their_own_postgres_database(compose_services):
    postgres_name, postgres = compose_postgres(compose_services)
    init_scripts = [
        path for target, path in compose_mounts(postgres).items() if target.startswith("/docker-entrypoint-initdb.d")
    ]
    assert init_scripts, "postgres mounts no init script into /docker-entrypoint-initdb.d"
    created = set()
    for script in init_scripts:
        assert script.exists(), f"missing init script {script}"
        created |= set(re.findall(r"CREATE\s+DATABASE\s+\"?(\w+)", script.read_text(), re.IGNORECASE))

    databases = {}
    for service in SERVICES:
        url = urlsplit(service_env(compose_services[service])["DATABASE_URL"])
        assert url.scheme in ("postgresql", "postgres", "postgresql+asyncpg"), url.geturl()
        assert url.hostname == postgres_name and (url.port or 5432) == 5432, url.geturl()
        databases[service] = url.path.lstrip("/")
    assert len(set(databases.values())) == len(SERVICES), f"services share a database: {databases}"
    assert set(databases.values()) <= created, f"init script creates {created}, services use {databases}"
    assert len(created) >= len(SERVICES)


@service_names
def test_compose_service_talks_to_the_kafka_broker(compose_services, service):
    kafka_name, kafka = compose_kafka(compose_services)
    env = service_env(compose_services[service])
    host, port = host_and_port(env["KAFKA_BOOTSTRAP_SERVERS"])
    assert host == kafka_name
    kafka_env = as_env(kafka.get("environment"))
    listeners = kafka_env.get("KAFKA_CFG_LISTENERS") or kafka_env["KAFKA_LISTENERS"]
    advertised = kafka_env.get("KAFKA_CFG_ADVERTISED_LISTENERS") or kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert f":{port}" in listeners and f"{kafka_name}:{port}" in advertised

    session, heartbeat = int(env["KAFKA_SESSION_TIMEOUT_MS"]), int(env["KAFKA_HEARTBEAT_INTERVAL_MS"])
    assert session >= KAFKA_MIN_SESSION_TIMEOUT_MS
    assert heartbeat * 3 <= session, "Kafka wants the heartbeat at most a third of the session timeout"


@service_names
def test_compose_service_healthcheck_calls_readyz_on_its_port(compose_services, service):
    _, port = SERVICES[service]
    spec = compose_services[service]
    check = " ".join(as_argv(spec["healthcheck"]["test"]))
    assert f":{port}/readyz" in check, check
    assert "curl" not in check and "wget" not in check, "python:3.11-slim has neither curl nor wget"
    env = as_env(spec.get("environment"))
    assert int(env.get("HTTP_PORT", port)) == port


@service_names
def test_compose_service_waits_for_a_healthy_broker_and_database(compose_services, service):
    kafka_name, kafka = compose_kafka(compose_services)
    postgres_name, postgres = compose_postgres(compose_services)
    depends_on = compose_services[service]["depends_on"]
    assert isinstance(depends_on, dict), "the short depends_on form does not wait for health"
    for dependency in (kafka_name, postgres_name):
        assert depends_on[dependency]["condition"] == "service_healthy"
    assert kafka.get("healthcheck", {}).get("test") and postgres.get("healthcheck", {}).get("test")


@service_names
def test_compose_service_has_a_replica_count_its_ports_allow(compose_services, service):
    _, port = SERVICES[service]
    spec = compose_services[service]
    replicas = spec["deploy"]["replicas"]
    assert isinstance(replicas, int) and replicas >= 1
    published = []
    for entry in spec.get("ports", []):
        if isinstance(entry, dict):
            published.append((str(entry.get("published", "")), int(entry["target"])))
            continue
        *host_part, target = str(entry).split("/")[0].split(":")
        published.append((host_part[-1] if host_part else "", int(target)))
    assert any(target == port for _, target in published), f"{service} does not publish {port}"
    for host_port, target in published:
        if replicas == 1:
            assert host_port == str(target), f"{service}: expected {target}:{target}, got {host_port}"
        elif "-" in host_port:  # a host range must leave one port per replica
            low, high = map(int, host_port.split("-"))
            assert high - low + 1 >= replicas
        else:  # one fixed host port cannot be bound by several containers
            assert host_port == "", f"{service} has {replicas} replicas but a fixed host port {host_port}"


def test_compose_has_several_replicas_somewhere(compose_services):
    assert any(compose_services[s]["deploy"]["replicas"] > 1 for s in SERVICES)


def test_compose_kafka_runs_kraft_without_zookeeper(compose_services):
    assert not [n for n, s in compose_services.items() if "zookeeper" in n or "zookeeper" in str(s.get("image", ""))]
    _, kafka = compose_kafka(compose_services)
    env = as_env(kafka.get("environment"))
    roles = env.get("KAFKA_PROCESS_ROLES") or env["KAFKA_CFG_PROCESS_ROLES"]
    assert {"broker", "controller"} <= set(roles.split(","))
    assert env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") or env.get("KAFKA_CFG_CONTROLLER_QUORUM_VOTERS")
    assert not any("ZOOKEEPER" in key for key in env)
    cluster_id = env.get("CLUSTER_ID") or env.get("KAFKA_KRAFT_CLUSTER_ID")
    if cluster_id:  # kafka-storage format wants a base64url-encoded 16-byte UUID
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_compose_postgres_is_version_16(compose_services):
    _, postgres = compose_postgres(compose_services)
    assert re.fullmatch(r"postgres:16([.\-].*)?", postgres["image"]), postgres["image"]


@service_names
def test_compose_service_mounts_the_company_setup_it_names(compose_services, service):
    spec = compose_services[service]
    setup_file = as_env(spec.get("environment")).get("COMPANY_SETUP_FILE")
    if setup_file is None:
        return  # the packaged demo company
    mounts = compose_mounts(spec)
    assert setup_file in mounts and mounts[setup_file].is_file(), f"{setup_file} is not mounted from a file"


def test_docker_compose_accepts_the_file():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


# --- Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_builds_the_locked_workspace_on_python_311_slim():
    instructions = dockerfile_instructions()
    assert [rest for keyword, rest in instructions if keyword == "FROM"][0].startswith("python:3.11-slim")
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "pip install" in runs and "uv" in runs
    assert re.search(r"uv sync (.* )?--frozen", runs) and "--no-dev" in runs


def test_dockerfile_runs_unbuffered_as_non_root_on_all_interfaces():
    instructions = dockerfile_instructions()
    env = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert re.search(r"PYTHONUNBUFFERED=1\b", env)
    assert re.search(r"HTTP_HOST=0\.0\.0\.0\b", env)
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    cmd = [rest for keyword, rest in instructions if keyword == "CMD"][-1]
    assert re.search(r"python.*-m.*kredit_\w+", cmd)


def test_dockerignore_keeps_the_host_virtualenv_out():
    patterns = [
        p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    excludes_everything_first = patterns[0] == "*" and "!.venv" not in patterns
    assert excludes_everything_first or any(p.rstrip("/").endswith(".venv") for p in patterns)


def test_the_image_carries_no_test_support_code_and_nothing_in_it_needs_any():
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    assert "shared/src/kredit_shared/testing.py" in patterns
    shipped = [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("shared/src/**/*.py")]
    importers = [
        str(path.relative_to(ROOT))
        for path in shipped
        if path.name != "testing.py" and re.search(r"kredit_shared(\.| import )testing\b", path.read_text())
    ]
    assert importers == []


# --- deploy/ (Kubernetes, kustomize) -----------------------------------------------------------


def load_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def is_manifest(doc: Any) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def generated_config_maps(directory: Path) -> list[dict[str, Any]]:
    """The ConfigMaps a kustomization's configMapGenerator makes (names without the hash suffix)."""
    maps = []
    for generator in kustomization(directory).get("configMapGenerator", []):
        data: dict[str, str] = {}
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        for env_file in generator.get("envs", []):
            for line in (directory / env_file).read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    data[key.strip()] = value.strip()
        for entry in generator.get("files", []):
            key, _, file_name = entry.rpartition("=")
            data[key or Path(file_name).name] = (directory / file_name).read_text()
        maps.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    return maps


def base_objects_from_files() -> list[dict[str, Any]]:
    """Every manifest in every YAML file under deploy/base, plus the generated ConfigMaps."""
    objects = []
    for path in sorted(BASE.rglob("*.y*ml")):
        objects += [doc for doc in load_documents(path) if is_manifest(doc) and doc["kind"] != "Kustomization"]
    return objects + generated_config_maps(BASE)


def kustomize(directory: Path) -> list[dict[str, Any]]:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([binary, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@pytest.fixture(scope="module", params=["files", "kubectl-kustomize"])
def k8s_objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """The same checks run on the files as written and, when kubectl is there, on the rendering."""
    return base_objects_from_files() if request.param == "files" else kustomize(BASE)


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def deployment_for(objects: list[dict[str, Any]], service: str) -> dict[str, Any]:
    package, _ = SERVICES[service]
    found = [
        d
        for d in find(objects, "Deployment")
        if any(
            ["python", "-m", package] == c.get("command", []) + c.get("args", [])
            for c in d["spec"]["template"]["spec"]["containers"]
        )
    ]
    assert len(found) == 1, f"expected one Deployment running {package}, found {len(found)}"
    return found[0]


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def container_env(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Environment variable -> (source kind, value or reference), following ConfigMap references."""
    env: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            (config_map,) = find(objects, "ConfigMap", source["configMapRef"]["name"])
            env |= {k: ("ConfigMap", v) for k, v in config_map.get("data", {}).items()}
        if "secretRef" in source:
            env["*"] = ("Secret", source["secretRef"]["name"])
    for var in container.get("env", []):
        value_from = var.get("valueFrom", {})
        if "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            (config_map,) = find(objects, "ConfigMap", ref["name"])
            env[var["name"]] = ("ConfigMap", config_map["data"][ref["key"]])
        elif "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            env[var["name"]] = ("Secret", f"{ref['name']}/{ref['key']}")
        else:
            env[var["name"]] = ("value", str(var.get("value", "")))
    return env


@service_names
def test_k8s_deployment_runs_the_service_from_the_kredit_image(k8s_objects, service):
    _, port = SERVICES[service]
    container = main_container(deployment_for(k8s_objects, service))
    assert container["image"].rsplit(":", 1)[0] == "kredit"
    assert port in [p["containerPort"] for p in container["ports"]]
    assert container["resources"]["requests"] and container["resources"]["limits"]


@service_names
def test_k8s_deployment_takes_its_settings_from_config_maps_and_a_secret(k8s_objects, service):
    container = main_container(deployment_for(k8s_objects, service))
    env = container_env(k8s_objects, container)
    kind, bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    assert kind == "ConfigMap" and host_and_port(bootstrap)[1] > 0
    assert env["DATABASE_URL"][0] == "Secret"
    session = int(env["KAFKA_SESSION_TIMEOUT_MS"][1])
    assert session >= KAFKA_MIN_SESSION_TIMEOUT_MS and int(env["KAFKA_HEARTBEAT_INTERVAL_MS"][1]) * 3 <= session
    if "HTTP_PORT" in env:
        assert int(env["HTTP_PORT"][1]) == SERVICES[service][1]


def test_k8s_services_read_different_database_secrets(k8s_objects):
    secrets = {
        container_env(k8s_objects, main_container(deployment_for(k8s_objects, s)))["DATABASE_URL"][1] for s in SERVICES
    }
    assert len(secrets) == len(SERVICES), secrets


@service_names
def test_k8s_deployment_mounts_the_company_setup_it_names(k8s_objects, service):
    deployment = deployment_for(k8s_objects, service)
    container = main_container(deployment)
    setup_file = Path(container_env(k8s_objects, container)["COMPANY_SETUP_FILE"][1])
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" not in volume:
            continue
        if mount.get("subPath"):
            path = mount["subPath"] if Path(mount["mountPath"]) == setup_file else None
        elif setup_file.is_relative_to(mount["mountPath"]):
            path = str(setup_file.relative_to(mount["mountPath"]))
        else:
            path = None
        # a configMap volume's `items` may rename keys to paths
        key = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}.get(path, path)
        (config_map,) = find(k8s_objects, "ConfigMap", volume["configMap"]["name"])
        if key in config_map.get("data", {}):
            assert yaml.safe_load(config_map["data"][key]), "empty company setup"
            return
    pytest.fail(f"{setup_file} is not mounted from a ConfigMap")


@service_names
def test_k8s_probes_use_livez_for_liveness_and_readyz_for_readiness_on_the_container_port(k8s_objects, service):
    """Liveness must not depend on the broker or the database (an outage would restart every pod, which
    heals nothing); readiness does."""
    _, port = SERVICES[service]
    container = main_container(deployment_for(k8s_objects, service))
    expected = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path, probe
        assert resolve_port(container, http_get["port"]) == port, probe


@service_names
def test_k8s_service_routes_to_the_deployment(k8s_objects, service):
    deployment = deployment_for(k8s_objects, service)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = main_container(deployment)
    services = [
        s
        for s in find(k8s_objects, "Service")
        if s["spec"].get("selector") and s["spec"]["selector"].items() <= pod_labels.items()
    ]
    assert len(services) == 1, f"expected one Service selecting {service}'s pods"
    targets = [resolve_port(container, p.get("targetPort", p["port"])) for p in services[0]["spec"]["ports"]]
    assert SERVICES[service][1] in targets


@service_names
def test_k8s_autoscaler_targets_the_deployment_within_the_partition_count(k8s_objects, service):
    deployment = deployment_for(k8s_objects, service)
    name = deployment["metadata"]["name"]
    autoscalers = [
        h for h in find(k8s_objects, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name
    ]
    assert len(autoscalers) == 1
    hpa = autoscalers[0]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["scaleTargetRef"]["apiVersion"] == "apps/v1"
    partitions = int(container_env(k8s_objects, main_container(deployment)).get("TOPIC_PARTITIONS", ("", "4"))[1])
    assert 1 <= hpa["spec"].get("minReplicas", 1) <= hpa["spec"]["maxReplicas"] <= partitions
    cpu = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization"
    # an HPA-managed Deployment must not pin replicas, or every apply resets the HPA's count
    assert "replicas" not in deployment["spec"]


def test_kustomization_lists_exactly_the_manifest_files():
    listed = kustomization(BASE).get("resources", [])
    for resource in listed:
        assert (BASE / resource).exists(), f"kustomization.yaml lists missing {resource}"
    manifest_files = {
        str(path.relative_to(BASE))
        for path in BASE.rglob("*.y*ml")
        if path.name != "kustomization.yaml" and any(is_manifest(doc) for doc in load_documents(path))
    }
    assert manifest_files <= set(listed), f"not in kustomization.yaml: {manifest_files - set(listed)}"
    for generator in kustomization(BASE).get("configMapGenerator", []):
        for entry in generator.get("files", []) + generator.get("envs", []):
            assert (BASE / entry.rpartition("=")[2]).is_file()


def test_the_deployed_company_setup_is_valid():
    from kredit_shared.company_setup import load_company_setup

    setups = [
        load_company_setup(BASE / key)  # raises SetupError naming the bad field
        for config_map in generated_config_maps(BASE)
        for key in config_map["data"]
        if key.endswith((".yaml", ".yml"))
    ]
    assert setups, "no company setup in the generated ConfigMaps"
    assert all(setup == load_company_setup() for setup in setups), "the deployed setup differs from the demo company"


def test_compose_and_kubernetes_share_the_consumer_settings(compose_services):
    (config,) = [m for m in generated_config_maps(BASE) if "KAFKA_SESSION_TIMEOUT_MS" in m["data"]]
    for service in SERVICES:
        env = as_env(compose_services[service].get("environment"))
        for key in ("KAFKA_SESSION_TIMEOUT_MS", "KAFKA_HEARTBEAT_INTERVAL_MS", "TOPIC_PARTITIONS"):
            assert env.get(key) == config["data"].get(key), f"{service}: {key} differs from deploy/base"


@pytest.mark.parametrize(
    "overlay", sorted(p.name for p in OVERLAYS.glob("*") if (p / "kustomization.yaml").exists()) or ["none"]
)
def test_overlay_renders_and_keeps_the_probes(overlay):
    if overlay == "none":
        pytest.skip("no overlays")
    objects = kustomize(OVERLAYS / overlay)
    for service in SERVICES:
        container = main_container(deployment_for(objects, service))
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        name = deployment_for(objects, service)["metadata"]["name"]
        autoscalers = [
            o
            for o in find(objects, "HorizontalPodAutoscaler") + find(objects, "ScaledObject")
            if o["spec"]["scaleTargetRef"]["name"] == name
        ]
        assert len(autoscalers) == 1, f"{service}: exactly one autoscaler (two would fight over the replicas)"


KEDA = ROOT / "deploy" / "components" / "keda-lag-scaling"


def keda_scaled_objects() -> list[dict[str, Any]]:
    return [doc for doc in load_documents(KEDA / "scaled-objects.yaml") if is_manifest(doc)]


@service_names
def test_keda_scales_each_service_on_its_own_consumer_groups_lag_within_the_partitions(service):
    objects = base_objects_from_files()
    deployment = deployment_for(objects, service)
    container = main_container(deployment)
    env = container_env(objects, container)
    (scaled,) = [
        o for o in keda_scaled_objects() if o["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    ]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    (lag,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "kafka"]
    assert lag["metadata"]["consumerGroup"] == f"kredit-{service}"  # ServiceSettings.group_id without a prefix
    assert lag["metadata"]["bootstrapServersFromEnv"] in env  # KEDA reads it from the container's environment
    assert int(lag["metadata"]["lagThreshold"]) > 0
    assert lag["metadata"]["allowIdleConsumers"] == "false"
    partitions = int(env.get("TOPIC_PARTITIONS", ("", "4"))[1])
    assert 1 <= scaled["spec"].get("minReplicaCount", 0) <= scaled["spec"]["maxReplicaCount"] <= partitions


def test_the_keda_component_replaces_the_hpas_in_the_production_overlay():
    objects = kustomize(OVERLAYS / "production")
    assert find(objects, "HorizontalPodAutoscaler") == []
    minimum = {o["metadata"]["name"]: o["spec"]["minReplicaCount"] for o in find(objects, "ScaledObject")}
    assert minimum == {"collections": 1, "invoicing": 1, "settlement": 2, "ledger-posting": 2}


# --- security (issue 14): the broker as a trust boundary, secrets, containers, network ---------

KAFKA_DIR = ROOT / "deploy" / "kafka"
# Who may do what on Kafka: each service consumes its inputs (and dead-letters to their .dlq topics)
# and produces its outputs; the ERP only writes erp.*.
CONSUMES = {
    # every service but the ledger keeps the exchange rates set over ledger-posting's API
    "invoicing": {"erp.customer-invoices", "gl.exchange-rates"},
    "settlement": {"erp.customer-payments", "ar.customer-transactions", "gl.journal-events", "gl.exchange-rates"},
    "collections": {"ar.customer-transactions", "ar.settlements", "gl.journal-events", "gl.exchange-rates"},
    "ledger-posting": {"gl.journal-lines", "gl.general-journals"},
    "erp": set(),
}
PRODUCES = {
    "invoicing": {"ar.customer-transactions", "gl.journal-lines"},
    "settlement": {"ar.customer-transactions", "ar.settlements", "gl.journal-lines"},
    "collections": {"gl.general-journals", "erp.customer-invoices"},  # interest notes and fees through invoicing
    "ledger-posting": {"gl.journal-events", "gl.exchange-rates"},
    "erp": {"erp.customer-invoices", "erp.customer-payments"},
}


@service_names
def test_the_acl_matrix_matches_what_each_service_subscribes_to_and_publishes(service, tmp_path):
    from importlib import import_module

    package, _ = SERVICES[service]
    app_module, settings_module = import_module(f"{package}.app"), import_module(f"{package}.settings")
    settings_class = next(
        v for k, v in vars(settings_module).items() if k.endswith("Settings") and k != "ServiceSettings"
    )
    app = app_module.create_app(settings_class(database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"))
    subscribed = {subscription.topic for subscription in app.state.runtime._subscriptions.values()}
    assert subscribed == CONSUMES[service]
    assert set(app.state.runtime.publications) == PRODUCES[service]


def test_compose_kafka_gives_each_principal_exactly_its_topics():
    script = (KAFKA_DIR / "init-kafka.sh").read_text()
    consumes: dict[str, set[str]] = {p: set() for p in CONSUMES}
    produces: dict[str, set[str]] = {p: set() for p in PRODUCES}
    for verb, principal, topic in re.findall(r"^(consumes|produces) (\S+) (\S+)$", script, re.M):
        (consumes if verb == "consumes" else produces)[principal].add(topic)
    assert (consumes, produces) == (CONSUMES, PRODUCES)
    for principal in CONSUMES:
        assert re.search(rf"^principal {principal} ", script, re.M), f"no SCRAM credential for {principal}"


def test_strimzi_users_get_exactly_their_topics():
    documents = load_documents(KAFKA_DIR / "strimzi.yaml")
    users = {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "KafkaUser"}
    assert set(users) == {f"kredit-{p}" for p in CONSUMES}
    for principal in CONSUMES:
        spec = users[f"kredit-{principal}"]
        assert spec["authentication"]["type"] == "scram-sha-512" and spec["authorization"]["type"] == "simple"
        granted = {
            (acl["resource"]["type"], acl["resource"]["name"], operation)
            for acl in spec["authorization"]["acls"]
            for operation in acl["operations"]
        }
        expected = {("topic", t, op) for t in CONSUMES[principal] for op in ("Read", "Describe")}
        expected |= {("topic", f"{t}.dlq", op) for t in CONSUMES[principal] for op in ("Write", "Describe")}
        expected |= {("topic", t, op) for t in PRODUCES[principal] for op in ("Write", "Describe")}
        expected |= {("group", f"kredit-{principal}", "Read")} if CONSUMES[principal] else set()
        assert granted == expected, principal
    topics = {d["spec"]["topicName"] for d in documents if d["kind"] == "KafkaTopic"}
    contract = set().union(*CONSUMES.values(), *PRODUCES.values())
    assert topics == contract | {f"{t}.dlq" for t in contract}


def test_compose_kafka_authenticates_every_client_and_denies_what_no_acl_allows(compose_services):
    _, kafka = compose_kafka(compose_services)
    env = as_env(kafka.get("environment"))
    protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert {name: p for name, p in protocols.items() if name != "CONTROLLER"} == {
        "INTERNAL": "SASL_PLAINTEXT",
        "EXTERNAL": "SASL_PLAINTEXT",
    }
    assert "CONTROLLER://localhost:" in env["KAFKA_LISTENERS"]  # the unauthenticated one stays inside
    start = (KAFKA_DIR / "start-kafka.sh").read_text()
    for setting in (
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        "auto.create.topics.enable=false",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
    ):
        assert setting in start
    assert "start-kafka.sh" in " ".join(as_argv(kafka.get("entrypoint")))


@service_names
def test_compose_service_is_its_own_kafka_principal_with_settings_the_service_accepts(compose_services, service):
    from kredit_shared.settings import ServiceSettings

    env = service_env(compose_services[service])
    assert env["KAFKA_SECURITY_PROTOCOL"].startswith("SASL_") and env["KAFKA_SASL_USERNAME"] == service
    assert env["KAFKA_SASL_PASSWORD"] and env["KAFKA_CREATE_TOPICS"] == "false"
    settings = ServiceSettings(
        service_name=service,
        http_port=SERVICES[service][1],
        **{k.lower(): v for k, v in env.items() if k.startswith(("KAFKA_", "DATABASE_"))},
    )
    assert settings.kafka_sasl_password.get_secret_value() == env["KAFKA_SASL_PASSWORD"]


def test_passwords_live_only_in_the_marked_local_dev_files():
    compose_text = COMPOSE_FILE.read_text()
    assert not re.search(r"(?i)password\s*[:=]\s*\S", compose_text.replace("KAFKA_ADMIN_PASSWORD (", ""))
    assert not re.search(r"://[^/\s:]+:[^@\s]+@", compose_text), "a URL with a password in docker-compose.yml"
    for env_file in (ROOT / "deploy" / "compose").glob("*"):
        assert env_file.name.endswith(".local-dev.env"), env_file
        assert env_file.read_text().startswith("# LOCAL DEVELOPMENT ONLY"), env_file
    assert "LOCAL DEVELOPMENT ONLY" in (ROOT / "deploy" / "postgres" / "init.sql").read_text()
    for path in BASE.rglob("*.y*ml"):
        text = path.read_text()
        assert not re.search(r"://[^/\s:]+:(?!\.\.\.@)[^@\s]+@", text), path  # "user:...@" is a placeholder
        for doc in load_documents(path):
            for var in (
                (doc or {})
                .get("spec", {})
                .get("template", {})
                .get("spec", {})
                .get("containers", [{}])[0]
                .get("env", [])
            ):
                if "PASSWORD" in var["name"] or var["name"] == "DATABASE_URL":
                    assert "secretKeyRef" in var.get("valueFrom", {}), (path, var["name"])


@service_names
def test_compose_service_runs_as_non_root_on_a_read_only_filesystem_without_capabilities(compose_services, service):
    spec = compose_services[service]
    assert spec["read_only"] is True and "/tmp" in spec["tmpfs"]
    assert spec["user"].split(":")[0] not in ("0", "root")
    assert spec["cap_drop"] == ["ALL"] and "no-new-privileges:true" in spec["security_opt"]


@service_names
def test_k8s_pod_runs_as_non_root_on_a_read_only_filesystem_without_capabilities(k8s_objects, service):
    deployment = deployment_for(k8s_objects, service)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    context = main_container(deployment)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]


@service_names
def test_k8s_service_reaches_kafka_and_postgres_over_tls_and_verifies_tokens_of_an_issuer(k8s_objects, service):
    deployment = deployment_for(k8s_objects, service)
    container = main_container(deployment)
    env = container_env(k8s_objects, container)
    assert env["KAFKA_SECURITY_PROTOCOL"][1] == "SASL_SSL" and env["KAFKA_SASL_MECHANISM"][1].startswith("SCRAM")
    assert env["KAFKA_SASL_USERNAME"] == ("value", f"kredit-{service}")
    assert env["KAFKA_SASL_PASSWORD"] == ("Secret", f"kredit-{service}/password")
    assert env["DATABASE_SSL_MODE"][1] == "verify-full"
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    for setting in ("KAFKA_SSL_CAFILE", "DATABASE_SSL_ROOT_CERT"):
        assert str(Path(env[setting][1]).parent) in mounted, setting
    assert env["AUTH_JWKS_URL"][1].startswith("https://") and env["AUTH_ISSUER"][1].startswith("https://")


def test_k8s_network_policies_deny_by_default_and_open_only_what_each_service_needs(k8s_objects):
    policies = {p["metadata"]["name"]: p["spec"] for p in find(k8s_objects, "NetworkPolicy")}
    deny = policies["kredit-default-deny"]
    assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "kredit"}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and not deny.get("ingress") and not deny.get("egress")
    for service, (_, port) in SERVICES.items():
        spec = policies[service]
        assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": service}
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
        assert [p["port"] for rule in spec["ingress"] for p in rule["ports"]] == [port]
        egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
        assert {53, 9093, 5432, 443} <= egress_ports
        assert egress_ports - {53, 9093, 5432, 443} == ({8083} if service == "collections" else set())
    ledger_sources = [s for rule in policies["ledger-posting"]["ingress"] for s in rule["from"]]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "collections"}}} in ledger_sources
