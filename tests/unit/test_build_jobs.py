"""Environment builds on Kubernetes: the buildah Job and its context, validated against
the Kubernetes schemas, and run through ``BuildJobs`` against a fake API (the edge:
objects shaped as kubernetes_asyncio returns them) for a build that pushes, one that
fails, one whose image cannot be pulled and one that runs out of time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace as NS

import kubernetes_validate
import pytest

from redspot.environments.builders import BuildFailed, KubernetesBuilder
from redspot.environments.jobs import BuildJobSettings, build_manifests, job_name
from redspot.environments.spec import parse_spec

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/redspot-env"
BASE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/redspot-singleuser@sha256:" + "b" * 64
DIGEST = "sha256:" + "c" * 64
SETTINGS = BuildJobSettings(repository=ECR, registry_secret="ecr-push")


def manifests(**spec):
    s = parse_spec({"name": "e", **spec}, {"singleuser": ""})
    tag = s.tag("sha256:" + "b" * 64)
    return s, tag, build_manifests(s, tag, BASE, SETTINGS)


@pytest.mark.parametrize("version", ["1.30.0", "1.33.0", "1.37.0"])
def test_the_build_job_validates(version):
    _, _, objects = manifests(python=["torch==2.13.0"], debian=["graphviz"], env={"A": "1"})
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_job_builds_the_context_unprivileged_and_pushes_with_the_registry_secret():
    _, tag, (configmap, job) = manifests(python=["six==1.16.0"])
    assert configmap["data"]["requirements.txt"] == "six==1.16.0\n"
    assert configmap["data"]["Dockerfile"].startswith(f"FROM {BASE}\n")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DESTINATION"] == f"{ECR}:{tag}"
    assert env["REGISTRY_AUTH_FILE"] == "/registry/auth.json"
    assert "buildah build --isolation chroot --storage-driver vfs" in container["command"][2]
    assert "--digestfile /dev/termination-log" in container["command"][2]
    # nobody on the node: its own user namespace, no token, no retries
    assert pod["hostUsers"] is False and pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert job["metadata"]["name"] == job_name(tag) and len(job_name(tag)) <= 63
    secret = next(v for v in pod["volumes"] if v["name"] == "registry")
    assert secret["secret"]["secretName"] == "ecr-push"


def test_a_build_needs_a_repository():
    s = parse_spec({"name": "e"}, {"singleuser": ""})
    with pytest.raises(ValueError, match="set the repository"):
        build_manifests(s, "env-1", BASE, BuildJobSettings())


class ApiError(Exception):
    def __init__(self, status):
        self.status = status


class FakeCluster:
    """The Core and Batch calls BuildJobs makes. ``script`` is the pod's life, one state
    per poll: (phase, log so far, waiting reason, terminated, job condition)."""

    def __init__(self, script):
        self.script, self.step, self.calls = list(script), 0, []
        self.objects = set()

    def _now(self):
        return self.script[min(self.step, len(self.script) - 1)]

    async def create_namespaced_config_map(self, namespace, body):
        self.calls.append("create configmap")
        self.objects.add(("configmap", body["metadata"]["name"]))

    async def create_namespaced_job(self, namespace, body):
        self.calls.append("create job")
        self.objects.add(("job", body["metadata"]["name"]))

    async def delete_namespaced_job(self, name, namespace, propagation_policy=None):
        self.calls.append("delete job")
        if ("job", name) not in self.objects:
            raise ApiError(404)
        self.objects.discard(("job", name))

    async def delete_namespaced_config_map(self, name, namespace):
        self.calls.append("delete configmap")
        if ("configmap", name) not in self.objects:
            raise ApiError(404)
        self.objects.discard(("configmap", name))

    async def list_namespaced_pod(self, namespace, label_selector):
        phase, _, waiting, terminated, _ = self._now()
        if phase is None:
            return NS(items=[])
        state = NS(waiting=NS(reason=waiting, message="back-off pulling image")
                   if waiting else None, terminated=terminated)
        return NS(items=[NS(metadata=NS(name="build-pod"),
                            status=NS(phase=phase, container_statuses=[NS(state=state)]))])

    async def read_namespaced_pod_log(self, name, namespace, container):
        return self._now()[1]

    async def read_namespaced_job_status(self, name, namespace):
        condition = self._now()[4]
        self.step += 1
        return NS(status=NS(conditions=[condition] if condition else None))


def run(script, timeout=30):
    from redspot.kubernetes import BuildJobs

    fake = FakeCluster(script)
    jobs = BuildJobs.__new__(BuildJobs)
    jobs.core = jobs.batch = fake
    jobs.interval = 0
    # the builder waits its Job's deadline and 120 s more: ``timeout`` in all
    builder = KubernetesBuilder(BuildJobSettings(repository=ECR, deadline_seconds=timeout - 120),
                                {"singleuser": BASE}, api_client=object())
    spec, tag, _ = manifests(python=["six==1.16.0"])
    lines = []

    async def build():
        import redspot.kubernetes as kube

        real = kube.BuildJobs
        kube.BuildJobs = lambda client: jobs
        try:
            return await builder.build(spec, tag, lines.append)
        finally:
            kube.BuildJobs = real

    try:
        return asyncio.run(build()), lines, fake
    except BuildFailed as e:
        return e, lines, fake


def done(kind, reason=None, message=""):
    return NS(type=kind, status="True", reason=reason, message=message)


def test_a_build_is_followed_line_by_line_and_gives_the_pushed_image():
    pushed = NS(message=DIGEST + "\n", exit_code=0, reason="Completed")
    location, lines, fake = run([
        (None, "", None, None, None),
        ("Pending", "", None, None, None),
        ("Running", "STEP 1/3: FROM base\n", None, None, None),
        ("Running", "STEP 1/3: FROM base\nSTEP 2/3: RUN uv pip install\n", None, None, None),
        ("Succeeded", "STEP 1/3: FROM base\nSTEP 2/3: RUN uv pip install\npushed\n", None,
         pushed, done("Complete")),
    ])
    assert location == f"{ECR}@{DIGEST}"
    assert lines[1:] == ["STEP 1/3: FROM base", "STEP 2/3: RUN uv pip install", "pushed"]
    assert lines[0].startswith("Build Job redspot-builds/redspot-build-")
    assert fake.objects == set()  # the Job and its ConfigMap are gone


def test_a_failed_build_says_why_and_leaves_nothing():
    failed = NS(message="", exit_code=1, reason="Error")
    error, lines, fake = run([
        ("Running", "STEP 2/3: RUN uv pip install\nerror: no solution\n", None, None, None),
        ("Failed", "STEP 2/3: RUN uv pip install\nerror: no solution\n", None, failed,
         done("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")),
    ])
    assert isinstance(error, BuildFailed)
    assert "BackoffLimitExceeded" in str(error) and "exited with 1" in str(error)
    assert "error: no solution" in lines and fake.objects == set()


def test_a_pod_that_cannot_pull_its_image_fails_the_build_at_once():
    error, _, fake = run([("Pending", "", "ImagePullBackOff", None, None)])
    assert isinstance(error, BuildFailed) and "ImagePullBackOff" in str(error)
    assert fake.objects == set()


def test_a_build_that_runs_out_of_time_is_failed_and_removed():
    error, _, fake = run([("Running", "STEP 2/3\n", None, None, None)], timeout=0)
    assert isinstance(error, BuildFailed) and "did not finish in" in str(error)
    assert fake.calls[-2:] == ["delete job", "delete configmap"] and fake.objects == set()


def test_a_job_that_completes_without_a_digest_is_a_failure():
    error, _, _ = run([("Succeeded", "", None, NS(message="", exit_code=0, reason="Completed"),
                        done("Complete"))])
    assert isinstance(error, BuildFailed) and "without a digest" in str(error)
