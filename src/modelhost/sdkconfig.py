"""The SageMaker Python SDK's configuration file, written by ``modelhost serve`` under the data
directory for ``SAGEMAKER_USER_CONFIG_OVERRIDE`` (the banner exports it).

It names the default bucket, ``sagemaker-<region>-<account>``. Without it
``Session.default_bucket()`` asks STS for the account through a client built with an explicit
regional ``endpoint_url`` (``https://sts.<region>.amazonaws.com``), which
``AWS_ENDPOINT_URL_STS`` cannot redirect; with it the SDK takes the name from the file
(``SageMaker.PythonSDK.Modules.Session.DefaultS3Bucket``) and only creates the bucket when it
is missing. JSON is valid YAML, the file's format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from modelhost.settings import Settings

FILE_NAME = "sagemaker-config.yaml"


def sdk_config_path(settings: Settings) -> Path:
    return settings.data_dir / FILE_NAME


def write_sdk_config(settings: Settings) -> Path:
    path = sdk_config_path(settings)
    session = {"DefaultS3Bucket": settings.default_bucket}
    doc = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"Session": session}}}}
    tmp = path.with_name(f".{FILE_NAME}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path
