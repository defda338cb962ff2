"""What the client commands share: settings, boto3 clients pointed at a server, one way to fail.

Every failure a user can cause or meet (an AWS error code, a server that does not answer, a
bad path) ends as one red line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import boto3
import botocore.session
import typer
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from rich.console import Console
from rich.markup import escape

from modelhost.settings import Settings
from modelhost.storage import StorageError

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_sagemaker_runtime import SageMakerRuntimeClient

DUMMY_CREDENTIAL = "modelhost"
_CONFIG = Config(
    retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=120
)
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}

PIPED_WIDTH = 160  # tables written to a pipe or file are not cut at 80 columns

console = Console()
if not console.is_terminal:
    console = Console(width=PIPED_WIDTH)
err = Console(stderr=True, soft_wrap=True)

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", help="The modelhost server (default: http://$MODELHOST_HOST:$MODELHOST_PORT)."
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The server's data directory, for uploads to its local directory object store "
        "when it has no S3 server (default: the one the server names; same machine only).",
    ),
]


def settings(data_dir: Path | None = None) -> Settings:
    if data_dir is None:
        return Settings()
    return Settings(data_dir=data_dir.resolve())


def default_url(s: Settings) -> str:
    host = "127.0.0.1" if s.host in _WILDCARD_HOSTS else s.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{s.port}"


@dataclass
class Server:
    """The server a command talks to, with lazily made boto3 clients."""

    url: str
    region: str

    @classmethod
    def from_options(cls, url: str | None, s: Settings | None = None) -> Server:
        s = s or settings()
        return cls((url or default_url(s)).rstrip("/"), s.region)

    def sagemaker(self) -> SageMakerClient:
        client: SageMakerClient = self.client("sagemaker")
        return client

    def autoscaling(self) -> object:
        """The application-autoscaling client (untyped: its stubs are not installed)."""
        return self.client("application-autoscaling")

    def runtime(self) -> SageMakerRuntimeClient:
        client: SageMakerRuntimeClient = self.client("sagemaker-runtime")
        return client

    def logs(self) -> Any:
        """The CloudWatch Logs client (untyped: its stubs are not installed)."""
        return self.client("logs")

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` at this server, with the caller's credentials."""
        session, key, secret = _session()
        make: Any = session.client
        return make(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            config=_CONFIG,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        """GET one of modelhost's own pages (``/modelhost/...``), signed with the caller's
        credentials (SigV4, service ``sagemaker``) as a server with access keys requires."""
        creds = caller_credentials()
        request = AWSRequest("GET", self.url + path)
        SigV4Auth(creds, "sagemaker", self.region).add_auth(request)
        headers = {k: str(v) for k, v in request.headers.items()}
        with urllib.request.urlopen(
            urllib.request.Request(self.url + path, headers=headers), timeout=timeout
        ) as resp:
            data: bytes = resp.read()
            return data


def _session() -> tuple[boto3.Session, str | None, str | None]:
    """A session, and dummy credentials when the environment and AWS config files have none.

    The credential chain stops before the EC2/ECS metadata services: on a laptop those cost a
    network timeout. A server without access keys accepts any credentials; one with keys
    needs a key's (environment or profile), and refusals say so (``AUTH_HINT``)."""
    core = botocore.session.get_session()
    resolver = core.get_component("credential_provider")
    for name in ("container-role", "iam-role"):
        resolver.remove(name)
    session = boto3.Session(botocore_session=core)
    if session.get_credentials() is not None:
        return session, None, None
    return session, DUMMY_CREDENTIAL, DUMMY_CREDENTIAL


def caller_credentials() -> Credentials:
    """The caller's credentials (environment, profile), else dummy ones (a server without
    access keys accepts any)."""
    session, key, secret = _session()
    found = session.get_credentials()
    if found is not None:
        frozen = found.get_frozen_credentials()
        return Credentials(
            frozen.access_key or DUMMY_CREDENTIAL,
            frozen.secret_key or DUMMY_CREDENTIAL,
            frozen.token,
        )
    return Credentials(key or DUMMY_CREDENTIAL, secret or DUMMY_CREDENTIAL)


def fail(message: str) -> NoReturn:
    err.print(f"[red]Error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(1)


# What a server with access keys answers a request it refuses (auth/).
AUTH_CODES = frozenset(
    {
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
    }
)
AUTH_HINT = (
    " (the server requires a modelhost access key: set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or an AWS profile, to the lines `modelhost keys create NAME "
    "--policy admin` printed)"
)


def client_error_text(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    code = error.get("Code", "Error")
    message = error.get("Message") or str(exc)
    hint = AUTH_HINT if code in AUTH_CODES else ""
    return f"{code}: {message}{hint}"


@contextmanager
def reporting(server: Server) -> Iterator[None]:
    """Turn boto3 and storage failures into one clear line and exit status 1."""
    try:
        yield
    except ClientError as exc:
        fail(client_error_text(exc))
    except EndpointConnectionError:
        fail(
            f"No modelhost server answers at {server.url}. Start one with `modelhost serve` "
            "or point --url at it."
        )
    except BotoCoreError as exc:
        fail(f"{type(exc).__name__}: {exc} (server {server.url})")
    except StorageError as exc:
        fail(f"Object store: {exc}")
    except KeyboardInterrupt:
        err.print("Interrupted; the server carries on with what it was asked to do.")
        raise typer.Exit(130) from None


def is_missing(exc: ClientError) -> bool:
    """SageMaker's answer for a resource that does not exist."""
    error = exc.response.get("Error", {})
    return error.get("Code") == "ValidationException" and "Could not find" in error.get(
        "Message", ""
    )
