"""All configuration, from MODELHOST_* environment variables or explicit arguments.

Nothing else in the server reads ``os.environ``; the settings object is passed in explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8765


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELHOST_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / ".modelhost")
    region: str = "us-east-1"
    account_id: str = "123456789012"

    # s3:// paths: the S3-compatible server at s3_endpoint_url (credentials: the two below, else
    # the AWS chain); unset: the embedded SeaweedFS server `serve` starts (embedded_s3), or
    # with embedded_s3 off the local directory <data_dir>/objects.
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    embedded_s3: bool = True
    # The S3 URL client commands are told to use (GET /modelhost/info): unset, the embedded
    # server's front (set by `serve`), else s3_endpoint_url.
    s3_public_url: str | None = None
    # Asynchronous inference's arn:aws:sns:... notification topics publish here (http(s)://
    # topics need nothing: they are webhooks).
    sns_endpoint_url: str | None = None

    # Access keys (auth/): the keys file (None: <data_dir>/keys.json). Once it holds a key,
    # every request must be signed with one; with none, only a loopback server is open, and
    # serving beyond loopback refuses to start unless insecure_no_auth is set.
    keys_file: Path | None = None
    insecure_no_auth: bool = False

    # Runtime API
    invocation_timeout_s: float = 60.0
    max_payload_bytes: int = 6 * 1024 * 1024
    # Back-pressure: the requests one instance may hold at once, in flight at it plus waiting
    # for it; past that on every instance of a variant, InvokeEndpoint answers
    # ThrottlingException (400, retried by botocore) at once. 0: no limit.
    max_requests_per_instance: int = Field(default=128, ge=0)
    # After activity the front server's event loop polls instead of sleeping for up to this
    # long (adaptive; keepawake.py): waking a halted vCPU costs tens of microseconds. 0: off.
    busy_poll_us: int = Field(default=200, ge=0, le=10_000)

    # Instances: "local" (processes, and containers, on this machine) or "ray" (actors on the
    # Ray cluster at ray_address; none: a local Ray started with the server; needs the `ray`
    # extra).
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    startup_health_timeout_s: float = 240.0
    stop_grace_s: float = 30.0
    reconcile_interval_s: float = 0.5
    # Every serving instance is sent GET /ping this often; one that has not answered for
    # longer than invocation_timeout_s (async endpoints: an hour) is hung: killed and replaced.
    # 0: no checks.
    health_check_interval_s: float = Field(default=5.0, ge=0)
    # Autoscaling: how often scaling policies are evaluated, and the window their metrics are
    # measured over (CloudWatch's one minute; short in tests).
    autoscaling_interval_s: float = Field(default=5.0, gt=0)
    autoscaling_window_s: float = Field(default=60.0, gt=0)
    # A serverless variant (without ProvisionedConcurrency) with no invocation for this long
    # scales to zero; its next request waits for an instance. 0: never.
    serverless_idle_s: float = Field(default=300.0, ge=0)
    max_artifact_bytes: int = 20 * 1024 * 1024 * 1024
    # Engine for container images: "docker", "podman" or a path; None: docker if `docker info`
    # answers, else podman.
    container_engine: str | None = None
    # GPUs instances may use (CUDA_VISIBLE_DEVICES); None: as many as `nvidia-smi -L` lists.
    gpu_count: int | None = None
    # Each instance process works on its own copy of the model directory, as each SageMaker
    # instance has its own /opt/ml/model, when the model is at most this big; a bigger one is
    # shared with the artifact cache (containers always get the cache's copy, read-only).
    model_copy_max_bytes: int = Field(default=2 * 1024**3, ge=0)
    # Built-in model server instances are forked from a process that has imported numpy,
    # scikit-learn and the server already (runtime/zygote.py): milliseconds instead of about
    # a second of interpreter start and imports. Off: every instance starts a new interpreter.
    zygote: bool = True
    # Multi-model endpoints (multimodel/): the memory each instance may fill with models (None:
    # 80% of its instance type's), the extracted archives kept on disk (LRU past this), and how
    # long a request waits for its model to load before ModelNotReadyException (SageMaker: 60 s).
    mme_memory_budget_bytes: int | None = Field(default=None, ge=0)
    mme_disk_cache_bytes: int = Field(default=10 * 1024**3, ge=0)
    mme_load_wait_s: float = Field(default=60.0, gt=0)

    # CloudWatch metrics: minutes of 1-minute history kept (in <data_dir>/metrics.db), and how
    # often the invocation counters are folded into it.
    metrics_retention_minutes: int = Field(default=360, ge=1)
    metrics_sample_interval_s: float = Field(default=10.0, gt=0, le=60)

    # The state store: unset, SQLite in <data_dir>/state.db (one server); a postgresql://
    # URL (psycopg 3) lets several servers share it: any answers the API and routes, one at a
    # time (the holder of the controller lease) runs the instances (docs/architecture.md).
    state_url: str | None = None
    # Several servers on PostgreSQL: the controller lease's length (another server takes over
    # at most this long after the holder stops renewing it, which it does every third of it),
    # and how often a server that does not hold it reads the published routes.
    leader_lease_s: float = Field(default=6.0, ge=1.0, le=300.0)
    route_poll_interval_s: float = Field(default=0.5, gt=0, le=30.0)
    # The address this server's instances listen on, which the routes it publishes name:
    # servers on other hosts reach them there (a non-loopback one is refused without access
    # keys, like `host`; a wildcard such as 0.0.0.0 is refused: others cannot dial it).
    instance_host: str = "127.0.0.1"
    # This host's name in the published routes (None: the hostname): a server uses an
    # instance's Unix socket only when the routes come from its own host, else TCP.
    host_id: str | None = None

    @property
    def state_db_url(self) -> str:
        return self.state_url or f"sqlite:///{self.data_dir / 'state.db'}"

    @property
    def shared_state(self) -> bool:
        """Whether the state store may be shared by several servers (PostgreSQL)."""
        return self.state_db_url.startswith("postgres")

    @property
    def s3_credentials(self) -> tuple[str, str] | None:
        if self.s3_access_key_id and self.s3_secret_access_key:
            return self.s3_access_key_id, self.s3_secret_access_key
        return None

    @property
    def default_bucket(self) -> str:
        """The bucket the SageMaker SDK uses by default: ``sagemaker-<region>-<account>``."""
        return f"sagemaker-{self.region}-{self.account_id}"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def instances_dir(self) -> Path:
        """Per-instance working copies of model directories (emptied at start-up)."""
        return self.data_dir / "instances"
