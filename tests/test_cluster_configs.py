"""cluster/*.yaml: valid for Ray's launcher and KubeRay, and safe by default.

    python -m pytest tests/test_cluster_configs.py -q      # seconds, no cloud account

Launcher YAMLs are prepared and validated exactly as ``ray up`` does it
(``prepare_config`` then ``validate_config`` against ray/autoscaler/ray-schema.json);
the KubeRay file is checked structurally. The safety rules: no Ray port open to the
world, SSH not left to Ray's world-open default security group, token authentication
on every node, no secrets in the files.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import ROOT

CLUSTER = ROOT / "cluster"
LAUNCHER_FILES = ["gpu.yaml", "local.yaml"]
ALL_FILES = [*LAUNCHER_FILES, "kuberay.yaml"]
RAY_PORTS = (6379, 8265, 10001)


def load(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


def start_commands(config: dict) -> list[str]:
    return [*config["head_start_ray_commands"], *config["worker_start_ray_commands"]]


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_config_passes_rays_own_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(name)
    validate_config(prepare_config(config))  # what `ray up` runs; raises on any schema violation


def test_schema_validation_is_strict_enough_to_catch_a_typo():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("gpu.yaml")
    config["head_start_ray_comands"] = config.pop("head_start_ray_commands")
    with pytest.raises(jsonschema.ValidationError, match="head_start_ray_comands"):
        validate_config(prepare_config(config))


def test_gpu_config_has_cpu_head_and_on_demand_and_spot_gpu_workers():
    config = load("gpu.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and "GPU" not in head["resources"]  # trials never on the head
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert all(t["resources"]["GPU"] >= 1 and t["min_workers"] == 0 and t["max_workers"] > 0 for t in workers.values())
    markets = {
        t["node_config"].get("InstanceMarketOptions", {}).get("MarketType", "on-demand") for t in workers.values()
    }
    assert markets == {"spot", "on-demand"}


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_project_is_synced_and_installed_for_ray_submit(name):
    # `ray submit` runs `python ~/tune.py`: the project must be importable from anywhere on the head.
    config = load(name)
    assert config["file_mounts"]["~/tunelab"] == "."
    assert any("pip install" in c and "-e ~/tunelab" in c for c in config["setup_commands"])
    head_env = " ".join([*config["setup_commands"], *config["head_setup_commands"]])
    assert "RAY_ADDRESS=" in head_env  # the driver joins this cluster instead of starting a local Ray
    assert "TUNELAB_STORAGE_PATH=" in head_env  # a folder every node can write checkpoints to


def test_ray_submit_passes_tune_flags_through_as_written():
    from ray.scripts.scripts import submit

    for argv, expected in [
        (["cluster/gpu.yaml", "tune.py", "--space", "cifar_resnet50"], ("--space", "cifar_resnet50")),
        (
            ["cluster/gpu.yaml", "tune.py", "--", "--space", "x", "--name", "r", "--resume"],
            ("--space", "x", "--name", "r", "--resume"),
        ),
    ]:
        context = submit.make_context("submit", argv)
        assert context.params["script"] == "tune.py"
        assert tuple(context.params["script_args"]) == expected


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_nodes_start_with_token_auth_and_private_dashboard(name):
    config = load(name)
    for command in start_commands(config):
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command, command
            assert "dashboard-host=0.0.0.0" not in command and "--ray-client-server-port" not in command
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the token, from outside git


def test_aws_nodes_use_a_preconfigured_security_group():
    # Ray's auto-created group always allows SSH from 0.0.0.0/0; naming a group (with SSH limited
    # to your CIDR, see the file's comments) is the only way to keep that closed.
    config = load("gpu.yaml")
    for name, node_type in config["available_node_types"].items():
        groups = node_type["node_config"].get("SecurityGroupIds")
        assert groups and all(g.startswith("sg-") for g in groups), name
    text = (CLUSTER / "gpu.yaml").read_text()
    assert "--port 22" in text and "TUNELAB_SSH_CIDR" in text


@pytest.mark.parametrize("name", ALL_FILES)
def test_nothing_open_to_the_world_and_no_secrets(name):
    text = (CLUSTER / name).read_text()
    config_only = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert "0.0.0.0/0" not in config_only and "::/0" not in config_only
    for rule in _ip_rules(yaml.safe_load_all(text)):
        ports = range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1)
        assert not any(p in ports for p in RAY_PORTS) or not rule.get("IpRanges"), rule
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # AWS access key ids
    assert not re.search(r"(?i)(secret|password|api_key|token)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{16,}", config_only)
    assert "WANDB_API_KEY=" not in config_only


def _ip_rules(documents):
    for doc in documents:
        stack = [doc]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                if "IpPermissions" in item:
                    yield from item["IpPermissions"]
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)


def test_kuberay_cluster_has_gpu_worker_group_and_token_auth():
    docs = [d for d in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()) if d]
    (cluster,) = [d for d in docs if d.get("kind") == "RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"  # not a LoadBalancer/NodePort open to the world
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"].get("dashboard-host") != "0.0.0.0"
    groups = spec["workerGroupSpecs"]
    gpu_groups = [
        g
        for g in groups
        if any(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1 for c in g["template"]["spec"]["containers"])
    ]
    assert gpu_groups, "no worker group requests nvidia.com/gpu"
    assert gpu_groups[0]["minReplicas"] <= gpu_groups[0]["maxReplicas"]
    containers = [
        *head["template"]["spec"]["containers"],
        *(c for g in groups for c in g["template"]["spec"]["containers"]),
    ]
    images = {c["image"] for c in containers}
    assert images and all(spec["rayVersion"] in image for image in images)
    for container in containers:
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]  # from a Secret, never inline
        assert env["TUNELAB_STORAGE_PATH"]["value"].startswith("/mnt/tunelab")
        assert any(m["mountPath"] == "/mnt/tunelab" for m in container["volumeMounts"])
    (claim,) = [d for d in docs if d.get("kind") == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_every_config_explains_itself():
    for name in ALL_FILES:
        lines = (CLUSTER / name).read_text().splitlines()
        assert lines[0].startswith("# tunelab"), name
        comments = sum(line.lstrip().startswith("#") or " # " in line for line in lines)
        assert comments >= len(lines) // 4, f"{name}: {comments} comment lines of {len(lines)}"
