"""The demo endpoint ``make run`` deploys: a scikit-learn iris classifier with an inference.py,
packed as model.tar.gz into the object store and deployed through the public API."""

from __future__ import annotations

import io
import json
import logging
import tarfile
import tempfile
from pathlib import Path

from modelhost.storage import ObjectStore

log = logging.getLogger(__name__)

DEMO_ENDPOINT = "demo-iris"
DEMO_BUCKET = "modelhost-demo"
DEMO_KEY = "iris/model.tar.gz"

INFERENCE_PY = '''\
"""Iris classifier: JSON rows of 4 features in, class names out (the toolkit handler contract)."""
import json
import os

import joblib
import numpy as np

CLASSES = ["setosa", "versicolor", "virginica"]


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def input_fn(body, content_type):
    if content_type == "application/json":
        data = json.loads(body)
        rows = data["instances"] if isinstance(data, dict) else data
        return np.asarray(rows, dtype=float).reshape(-1, 4)
    if content_type == "text/csv":
        return np.genfromtxt(body.splitlines(), delimiter=",").reshape(-1, 4)
    raise ValueError(f"unsupported content type {content_type}")


def predict_fn(rows, model):
    return model.predict(rows)


def output_fn(prediction, accept):
    labels = [CLASSES[int(i)] for i in prediction]
    if accept == "text/csv":
        return "\\n".join(labels) + "\\n", "text/csv"
    return json.dumps({"predictions": labels}), "application/json"
'''


def build_archive() -> bytes:
    """Train the iris model (a fraction of a second) and pack model.tar.gz in memory."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        joblib.dump(model, root / "model.joblib")
        (root / "code").mkdir()
        (root / "code" / "inference.py").write_text(INFERENCE_PY)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(root / "model.joblib", "model.joblib")
            tar.add(root / "code" / "inference.py", "code/inference.py")
        return buf.getvalue()


def ensure_artifact(store: ObjectStore) -> str:
    if store.head(DEMO_BUCKET, DEMO_KEY) is None:
        store.ensure_bucket(DEMO_BUCKET)
        store.put_bytes(DEMO_BUCKET, DEMO_KEY, build_archive())
    return f"s3://{DEMO_BUCKET}/{DEMO_KEY}"


def requests(model_data_url: str) -> list[tuple[str, dict[str, object]]]:
    """The three control-plane calls that deploy the demo, in order."""
    return [
        (
            "CreateModel",
            {
                "ModelName": DEMO_ENDPOINT,
                "PrimaryContainer": {
                    "Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/"
                    "sagemaker-scikit-learn:1.2-1-cpu-py3",
                    "ModelDataUrl": model_data_url,
                },
                "ExecutionRoleArn": "arn:aws:iam::123456789012:role/modelhost-demo",
            },
        ),
        (
            "CreateEndpointConfig",
            {
                "EndpointConfigName": DEMO_ENDPOINT,
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": DEMO_ENDPOINT,
                        "InstanceType": "ml.m5.large",
                        "InitialInstanceCount": 1,
                    }
                ],
            },
        ),
        ("CreateEndpoint", {"EndpointName": DEMO_ENDPOINT, "EndpointConfigName": DEMO_ENDPOINT}),
    ]


def how_to_call(url: str, region: str, s3_url: str | None, sdk_config: Path) -> str:
    body = json.dumps([[5.1, 3.5, 1.4, 0.2]])
    s3 = f" AWS_ENDPOINT_URL_S3={s3_url}" if s3_url else ""
    return f"""
modelhost is serving on {url} with the demo endpoint '{DEMO_ENDPOINT}'.

  curl:
    curl -s -X POST {url}/endpoints/{DEMO_ENDPOINT}/invocations \\
         -H 'Content-Type: application/json' -d '{body}'

  AWS CLI (any credentials will do; `make` installs AWS CLI v1 as .venv/bin/aws):
    export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION={region}
    aws --endpoint-url {url} sagemaker list-endpoints
    aws --endpoint-url {url} sagemaker-runtime invoke-endpoint --endpoint-name {DEMO_ENDPOINT} \\
        --content-type application/json --body '{body}' out.json && cat out.json
    (AWS CLI v2 reads --body as base64: add --cli-binary-format raw-in-base64-out)

  boto3:
    import boto3
    rt = boto3.client("sagemaker-runtime", endpoint_url="{url}", region_name="{region}",
                      aws_access_key_id="test", aws_secret_access_key="test")
    print(rt.invoke_endpoint(EndpointName="{DEMO_ENDPOINT}", ContentType="application/json",
                             Body='{body}')["Body"].read())

  Existing code, unchanged (boto3, AWS CLI and the SageMaker Python SDK read these):
    export AWS_ENDPOINT_URL_SAGEMAKER={url} AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={url}
    export AWS_ENDPOINT_URL_STS={url}{s3}
    export AWS_ENDPOINT_URL_CLOUDWATCH={url} AWS_ENDPOINT_URL_CLOUDWATCH_LOGS={url}
    export SAGEMAKER_USER_CONFIG_OVERRIDE={sdk_config}

  modelhost endpoints | modelhost logs {DEMO_ENDPOINT} --follow | Ctrl-C stops everything.
"""
