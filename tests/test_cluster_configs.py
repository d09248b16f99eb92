"""The cluster files (cluster/Dockerfile, aws-gpu.yaml, kuberay-rayjob.yaml, README.md)
agree with each other and with the code: commands parse with the project's CLI and name a
shipped suite, one image everywhere, GPU nodes hold a trial, MLflow listens where the
tracking URI points, and Ray's storage path is storage every node sees."""

import fnmatch
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from packaging.requirements import Requirement

from benchmark.cli import build_parser
from benchmark.sweep.suite import SUITES_DIR, load_suite, suite_path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
SHELL_OPERATORS = {">", ">>", "&", "&&", ";", "|", "||", "2>&1"}


# -- reading the files ------------------------------------------------------------------------

def _launcher() -> dict:
    return yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())


def _manifests(kind: str) -> list[dict]:
    docs = yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text())
    return [d for d in docs if d and d.get("kind") == kind]


def _rayjob() -> dict:
    (job,) = _manifests("RayJob")
    return job


def _dockerfile() -> str:
    return (CLUSTER / "Dockerfile").read_text()


def _dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", _dockerfile(), re.M))


def _built_image() -> str:
    """The tag the Dockerfile's header tells you to build."""
    match = re.search(r"docker build -f cluster/Dockerfile -t (\S+) \.", _dockerfile())
    assert match, "cluster/Dockerfile does not say how to build it"
    return match.group(1)


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirement(name: str) -> Requirement:
    for spec in _pyproject()["project"]["dependencies"]:
        if Requirement(spec).name == name:
            return Requirement(spec)
    raise AssertionError(f"pyproject.toml does not depend on {name}")


def _pods(job: dict) -> dict[str, dict]:
    """Pod specs of the RayJob's cluster: 'head' and each worker group by name."""
    spec = job["spec"]["rayClusterSpec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    for group in spec["workerGroupSpecs"]:
        pods[group["groupName"]] = group["template"]["spec"]
    return pods


def _readme_commands(prefix: str) -> list[str]:
    """The lines of cluster/README.md's bash blocks that start with `prefix`."""
    text = (CLUSTER / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip().startswith(prefix)]


def _readme_submit_commands() -> list[str]:
    """The `ray job submit ...` lines: the launcher's workflow."""
    return _readme_commands("ray job submit")


def _benchmark_args(command: str):
    """The project's own parser applied to the `python -m benchmark ...` part of a command
    (parsing only: nothing runs)."""
    tokens = shlex.split(command)
    for i in range(len(tokens) - 2):
        if tokens[i:i + 3] == ["python", "-m", "benchmark"]:
            return build_parser().parse_args(tokens[i + 3:])  # bad args raise UserError
    raise AssertionError(f"no `python -m benchmark` in {command!r}")


def _mlflow_server_params(command: str) -> dict:
    """The options of the `mlflow server` in a shell command, parsed by MLflow's own CLI."""
    from mlflow.cli import cli

    tokens = shlex.split(command)
    start = next(i for i in range(len(tokens) - 1) if tokens[i:i + 2] == ["mlflow", "server"]) + 2
    args = []
    for token in tokens[start:]:
        if token in SHELL_OPERATORS or token.startswith(">"):
            break
        args.append(token)
    return cli.commands["server"].make_context("server", args).params


def _suite_needs(name: str) -> dict[str, float]:
    """CPUs and GPUs one trial of a shipped suite holds. `distributed` is read from the
    YAML itself, defensively: a data-parallel trial holds workers x per-worker resources."""
    suite = load_suite(name)
    raw = yaml.safe_load(suite_path(name).read_text())
    distributed = raw.get("distributed")
    if distributed:
        workers = int(distributed.get("workers", 1))
        return {"CPU": workers * float(distributed.get("cpus_per_worker", 1)),
                "GPU": workers * float(distributed.get("gpus_per_worker", 0))}
    return {"CPU": float(suite.resources["cpus_per_trial"]),
            "GPU": float(suite.resources["gpus_per_trial"])}


def _quantity(value) -> float:
    """A Kubernetes CPU / GPU quantity: 4, "40", "500m"."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _under(path: str, root: str) -> bool:
    return Path(path) == Path(root) or Path(root) in Path(path).parents


def _suite_commands() -> list[str]:
    return [_rayjob()["spec"]["entrypoint"], *_readme_submit_commands()]


# -- the tests --------------------------------------------------------------------------------

def test_the_configs_name_the_image_the_dockerfile_builds():
    image = _built_image()
    assert _launcher()["docker"]["image"] == image
    for key in ("head_image", "worker_image"):
        assert _launcher()["docker"].get(key, image) == image
    containers = [c for pod in _pods(_rayjob()).values() for c in pod["containers"]]
    assert containers and {c["image"] for c in containers} == {image}
    # Tagged with the version of the code inside it.
    assert image.rsplit(":", 1)[1] == _pyproject()["project"]["version"]


def test_the_image_has_the_versions_the_project_pins():
    from packaging.specifiers import SpecifierSet

    args = _dockerfile_args()
    base = re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py(\d)(\d+)-gpu$", _dockerfile(), re.M)
    assert base, "the image is not built on Ray's GPU image of RAY_VERSION"
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(".".join(base.groups()))
    assert _requirement("ray").specifier.contains(args["RAY_VERSION"])
    assert _rayjob()["spec"]["rayClusterSpec"]["rayVersion"] == args["RAY_VERSION"]
    assert _requirement("torch").specifier.contains(args["TORCH_VERSION"])


def test_the_build_context_keeps_the_code_and_the_deepspeed_configs():
    patterns = [line.strip() for line in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    needed = ["pyproject.toml", "README.md", "benchmark/cli.py", "benchmark/suites/revisions-llm.yaml",
              "strategies/__init__.py", "tasks/__init__.py",
              *[str(p.relative_to(REPO)) for p in (CLUSTER / "deepspeed").glob("*.json")]]
    for path in needed:
        parts = Path(path).parts
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        excluded = [p for p in patterns for prefix in prefixes if fnmatch.fnmatch(prefix, p)]
        assert not excluded, f"{path} is left out of the image by {excluded}"
    assert ".venv" in patterns and ".git" in patterns  # nor a multi-GB context
    assert "pip install --no-cache-dir -e ." in _dockerfile()  # cluster/deepspeed is read beside the code


def test_the_launcher_config_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_launcher()))  # Ray's schema and checks, as `ray up` does


@pytest.mark.parametrize("command", _suite_commands())
def test_suite_commands_parse_with_the_cli_and_join_the_cluster(command):
    args = _benchmark_args(command)
    assert args.command == "run"
    assert suite_path(args.suite).parent == SUITES_DIR, f"{args.suite} is not a shipped suite"
    load_suite(args.suite)
    assert _suite_needs(args.suite)["GPU"] > 0, "a GPU cluster for a suite that asks no GPU"
    # A Ray job's driver must join the cluster it runs on, not start a Ray of its own.
    assert args.address == "auto"
    assert urlparse(args.tracking_uri).scheme == "http"
    assert args.storage_path and args.results_dir


def test_the_rayjob_runs_the_revisions_llm_suite_and_the_readme_shows_the_launcher_job():
    assert _benchmark_args(_rayjob()["spec"]["entrypoint"]).suite == "revisions-llm"
    commands = _readme_submit_commands()
    assert commands, "cluster/README.md shows no `ray job submit` command"
    assert {_benchmark_args(c).suite for c in commands} == {"revisions-llm"}
    # The README quotes the RayJob's entrypoint: the quote must be the manifest's command.
    quoted = _readme_commands("python -m benchmark run")
    assert quoted == [" ".join(_rayjob()["spec"]["entrypoint"].split())]


def test_gpu_worker_nodes_hold_a_trial_and_the_head_runs_none():
    needs = [_suite_needs(_benchmark_args(c).suite) for c in _suite_commands()]
    launcher = _launcher()
    workers = {name: t for name, t in launcher["available_node_types"].items()
               if name != launcher["head_node_type"]}
    assert workers
    for name, node_type in workers.items():
        for need in needs:
            for resource in ("CPU", "GPU"):
                assert node_type["resources"].get(resource, 0) >= need[resource], (name, resource, need)
    assert launcher["available_node_types"][launcher["head_node_type"]]["resources"].get("CPU") == 0

    job = _rayjob()
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        for need in needs:
            assert _quantity(limits.get("nvidia.com/gpu", 0)) >= need["GPU"], group["groupName"]
            assert _quantity(limits["cpu"]) >= need["CPU"], group["groupName"]
    assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_the_head_runs_mlflow_where_the_tracking_uri_points():
    # Launcher: the server is started with Ray on the head; the job's driver runs there too.
    servers = [c for c in _launcher()["head_start_ray_commands"] if "mlflow server" in c]
    assert len(servers) == 1, "the launcher's head does not start one MLflow server"
    launcher_server = _mlflow_server_params(servers[0])
    # KubeRay: a container of the head pod, which shares the driver's network namespace.
    head = _pods(_rayjob())["head"]["containers"]
    sidecars = [" ".join(c.get("command", []) + c.get("args", [])) for c in head]
    sidecars = [s for s in sidecars if "mlflow server" in s]
    assert len(sidecars) == 1, "the RayJob's head pod runs no MLflow server"
    rayjob_server = _mlflow_server_params(sidecars[0])

    for commands, server in ((_readme_submit_commands(), launcher_server),
                             ([_rayjob()["spec"]["entrypoint"]], rayjob_server)):
        assert server["host"] == "0.0.0.0"
        for command in commands:
            uri = urlparse(_benchmark_args(command).tracking_uri)
            assert uri.hostname in ("127.0.0.1", "localhost"), command
            assert uri.port == server["port"], (command, server["port"])
    # The store outlives the cluster: on the shared volume.
    for server in (launcher_server, rayjob_server):
        assert _under(server["backend_store_uri"].replace("sqlite:///", ""), "/mnt/shared")


def test_the_storage_path_is_on_storage_every_node_sees():
    # KubeRay: a ReadWriteMany claim, mounted at the same path in the head and every worker.
    job = _rayjob()
    claims = {c["metadata"]["name"]: c for c in _manifests("PersistentVolumeClaim")}
    shared_mounts = None
    for name, pod in _pods(job).items():
        rwx_volumes = {v["name"] for v in pod.get("volumes", [])
                       if "persistentVolumeClaim" in v
                       and "ReadWriteMany" in claims[v["persistentVolumeClaim"]["claimName"]]["spec"]["accessModes"]}
        mounts = {m["mountPath"] for m in pod["containers"][0].get("volumeMounts", [])
                  if m["name"] in rwx_volumes}
        shared_mounts = mounts if shared_mounts is None else shared_mounts & mounts
    args = _benchmark_args(job["spec"]["entrypoint"])
    assert any(_under(args.storage_path, m) for m in shared_mounts), (args.storage_path, shared_mounts)
    assert any(_under(str(args.results_dir), m) for m in shared_mounts)

    # Launcher: EFS mounted on every host before docker starts, and passed into the container.
    launcher = _launcher()
    mounts = [shlex.split(c.split("||")[-1]) for c in launcher["initialization_commands"]
              if re.search(r"\bmount -t (nfs4?|efs)\b", c)]
    assert mounts, "the launcher mounts no shared file system"
    host_mount = mounts[0][-1]
    assert f"-v {host_mount}:{host_mount}" in launcher["docker"]["run_options"]
    for name, node_type in launcher["available_node_types"].items():
        assert "initialization_commands" not in node_type, f"{name} would skip the shared mount"
    for command in _readme_submit_commands():
        args = _benchmark_args(command)
        assert _under(args.storage_path, host_mount), command
        assert _under(str(args.results_dir), host_mount), command
