"""Which object store the platform uses for ``s3://`` URLs, and starting the embedded one.

- ``MODELHOST_S3_ENDPOINT_URL`` set: that S3-compatible server (or AWS S3).
- else, by default: the embedded SeaweedFS server (storage/embedded.py), started by ``serve``;
  objects left in the old local directory store are moved into it.
- else (``MODELHOST_EMBEDDED_S3=false``): the local directory ``<data-dir>/objects``.
"""

from __future__ import annotations

import logging

from modelhost.settings import Settings
from modelhost.storage import ObjectStore, object_store
from modelhost.storage.embedded import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    EmbeddedS3,
    relay_host,
    start_embedded_s3,
)
from modelhost.storage.migrate import move_local_objects
from modelhost.storage.s3front import Check

log = logging.getLogger(__name__)


def platform_store(settings: Settings) -> ObjectStore:
    return object_store(
        settings.objects_dir, settings.s3_endpoint_url, settings.region, settings.s3_credentials
    )


def start_platform_s3(
    settings: Settings, check: Check | None = None
) -> tuple[Settings, EmbeddedS3 | None]:
    """Start the embedded S3 server when the settings ask for it; the settings that point the
    platform at it (SeaweedFS's own port, modelhost's identity) and the running server. Its
    public front listens where the API does and checks requests with ``check`` (auth/gate.py
    ``Gate.s3_check``)."""
    if settings.s3_endpoint_url or not settings.embedded_s3:
        return settings, None
    root, buckets = settings.data_dir / "s3", [settings.default_bucket]
    server = start_embedded_s3(root, buckets, check, relay_host(settings.host))
    log.info("embedded S3 server ready in %.2f s at %s", server.started_in_s, server.public_url)
    updated = settings.model_copy(
        update={
            "s3_endpoint_url": server.direct_url,
            "s3_access_key_id": ACCESS_KEY_ID,
            "s3_secret_access_key": SECRET_ACCESS_KEY,
            "s3_public_url": settings.s3_public_url or server.public_url,
        }
    )
    try:
        move_local_objects(settings.objects_dir, platform_store(updated))
    except BaseException:
        server.stop()
        raise
    return updated, server
