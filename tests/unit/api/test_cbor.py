"""Our CBOR against botocore's own rpc-v2-cbor serializer and parser."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from botocore.parsers import RpcV2CBORParser
from botocore.serialize import RpcV2CBORSerializer

from modelhost.api import cbor
from modelhost.errors import SerializationException

MODEL = botocore.session.get_session().get_service_model("cloudwatch")


def test_decodes_what_botocore_sends() -> None:
    op = MODEL.operation_model("GetMetricData")
    params: dict[str, Any] = {
        "MetricDataQueries": [
            {
                "Id": "m1",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": "Invocations",
                        "Dimensions": [{"Name": "EndpointName", "Value": "ep"}],
                    },
                    "Period": 60,
                    "Stat": "p99.9",
                },
                "ReturnData": True,
            }
        ],
        "StartTime": datetime(2026, 1, 1, tzinfo=UTC),
        "EndTime": datetime(2026, 1, 1, 1, 30, 0, 500000, tzinfo=UTC),
        "MaxDatapoints": 100_000,
    }
    request = RpcV2CBORSerializer().serialize_to_request(params, op)
    decoded = cbor.decode(request["body"])
    assert decoded["MetricDataQueries"] == params["MetricDataQueries"]
    assert decoded["StartTime"] == params["StartTime"].timestamp()
    assert decoded["EndTime"] == params["EndTime"].timestamp()
    assert decoded["MaxDatapoints"] == 100_000


def test_botocore_parses_what_we_send() -> None:
    op = MODEL.operation_model("GetMetricStatistics")
    when = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    result = {
        "Label": "ModelLatency",
        "Datapoints": [
            {
                "Timestamp": when,
                "Sum": 3,
                "SampleCount": 2.0,
                "Unit": "Microseconds",
                "ExtendedStatistics": {"p99": 1.5},
            }
        ],
    }
    body = cbor.encode_shaped(op.output_shape, result)
    response = {"body": body, "headers": {}, "status_code": 200}
    shape: Any = op.output_shape
    parsed = RpcV2CBORParser().parse(response, shape)
    point = parsed["Datapoints"][0]
    assert point["Timestamp"] == when
    assert point["Sum"] == 3.0
    assert point["ExtendedStatistics"] == {"p99": 1.5}


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing
        b"\xa1",  # a map with no entries following
        b"\xa1\x01\x02",  # an integer key
        b"\xbf\x61a",  # indefinite map without break
        b"\xc2\x01",  # an unsupported tag
        b"\x1c",  # reserved additional information
        b"\x61\xff",  # text that is not UTF-8
        b"\xa0\x00",  # trailing data
        b"\x81" * 100 + b"\x00",  # too deep
    ],
)
def test_malformed_cbor_is_a_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationException):
        cbor.decode(data)


def test_plain_values_round_trip() -> None:
    value = {"a": [1, -2, 2**40, 1.5, True, False, None, "é", b"\x00"], "b": {}}
    assert cbor.decode(cbor.encode(value)) == value
    indefinite = b"\xbf\x61k\x9f\x01\x7f\x61x\x61y\xff\xff\xff"
    assert cbor.decode(indefinite) == {"k": [1, "xy"]}
    assert cbor.decode(b"\xf9\x3c\x00") == 1.0
    assert cbor.decode(b"\xfa" + struct.pack(">f", 2.5)) == 2.5
