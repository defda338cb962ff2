"""CreateModel's check that the model data it names is there (SageMaker refuses a model whose
artifact it cannot access, so a typo fails at CreateModel, not minutes later at CreateEndpoint)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelhost.errors import ValidationException
from modelhost.storage import ObjectStore, StorageError, parse_s3_url


def model_data_checker(store: ObjectStore) -> Callable[[dict[str, Any]], None]:
    def check(container: dict[str, Any]) -> None:
        if container.get("Mode") == "MultiModel":
            return  # a prefix, maybe empty yet: models are added under it later
        if url := container.get("ModelDataUrl"):
            _check_url(store, url, prefix=False)
        source = container.get("ModelDataSource", {}).get("S3DataSource")
        if source:
            _check_url(store, source["S3Uri"], prefix=source["S3DataType"] == "S3Prefix")

    return check


def _check_url(store: ObjectStore, url: str, *, prefix: bool) -> None:
    if url.startswith(("file://", "/")):
        path = Path(url.removeprefix("file://"))
        if not path.exists():
            raise ValidationException(f"Could not access model data at {url}: no such file.")
        return
    if not url.startswith("s3://"):
        return
    try:
        bucket, key = parse_s3_url(url)
        found = (
            next(iter(store.list(bucket, key)), None) is not None
            if prefix
            else store.head(bucket, key) is not None
        )
    except (StorageError, ValueError) as exc:
        raise ValidationException(f"Could not access model data at {url}: {exc}") from exc
    if not found:
        what = "no objects under this prefix" if prefix else "no such object"
        raise ValidationException(f"Could not access model data at {url}: {what}.")
