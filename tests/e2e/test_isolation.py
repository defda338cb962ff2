"""What a process instance is handed by the platform (docs/robustness.md, "Isolation"): its own
copy of the model and a scrubbed environment. The server's secrets-like variables, its AWS
credentials and its settings (the data directory, hence the state database) do not reach user
code; what CreateModel's Environment sets does."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from modelhost.backends.local import inherited_environment
from tests.e2e.procs import wait_zygote
from tests.fixtures.server import FIXTURE_MODELS, LiveServer, deploy, unique

pytestmark = pytest.mark.e2e

SERVER_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIASERVERSIDE000000",
    "AWS_SECRET_ACCESS_KEY": "server-aws-secret",
    "AWS_SESSION_TOKEN": "server-session-token",
    "DATABASE_PASSWORD": "server-db-password",
    "GITHUB_TOKEN": "server-github-token",
    "STRIPE_API_KEY": "server-stripe-key",
    "MODELHOST_SOMETHING_PRIVATE": "server-setting",
}


@pytest.fixture(scope="module")
def secret_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("iso"), env=SERVER_SECRETS).start()
    yield live
    live.stop()


def test_instance_sees_no_server_secret_nor_the_state_database(secret_server: LiveServer) -> None:
    sm, rt = secret_server.client("sagemaker"), secret_server.client("sagemaker-runtime")
    wait_zygote(secret_server.log_path)  # a forked instance: the zygote holds no secret either
    name = unique("environ")
    desc = deploy(sm, name, str(FIXTURE_MODELS / "environ"),
                  environment={"USER_API_TOKEN": "the-users-own"})  # fmt: skip
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    out = rt.invoke_endpoint(EndpointName=name, Body=b"{}", ContentType="application/json")
    seen = json.loads(out["Body"].read())
    environ: dict[str, str] = seen["environ"]
    values = "\n".join(environ.values())
    for var, secret in SERVER_SECRETS.items():
        assert var not in environ and secret not in values, var
        # nor in /proc/self/environ (for an instance forked from the zygote: the zygote's)
        assert secret not in seen["proc_environ"], var
    assert environ["USER_API_TOKEN"] == "the-users-own"  # the model's own settings stay
    assert "MODELHOST_DATA_DIR" not in environ
    assert "state.db" not in values
    # its own model copy, not the artifact cache's shared directory
    parts = seen["model_dir"].split("/")
    assert "instances" in parts and "cache" not in parts, seen["model_dir"]
    assert seen["cwd"] == seen["model_dir"]
    sm.delete_endpoint(EndpointName=name)


def test_inherited_environment_keeps_the_ordinary_and_drops_the_private() -> None:
    env = {"PATH": "/bin", "HOME": "/h", "LANG": "C", "PYTHONPATH": "/p", "AWS_REGION": "eu-west-1",
           "AWS_PROFILE": "prod", "AWS_ENDPOINT_URL": "http://x", "MODELHOST_PORT": "8080",
           "my_secret": "s", "NPM_TOKEN": "t", "PGPASSWORD": "p", "HF_TOKEN": "h"}  # fmt: skip
    assert inherited_environment(env) == {
        "PATH": "/bin", "HOME": "/h", "LANG": "C", "PYTHONPATH": "/p", "AWS_REGION": "eu-west-1",
    }  # fmt: skip
