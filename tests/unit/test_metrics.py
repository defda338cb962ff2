from __future__ import annotations

from modelhost.metrics import Recorder


def test_cloudwatch_names_and_dimensions() -> None:
    rec = Recorder()
    rec.record("ep", "AllTraffic", instances=2, status=200, model_us=800, total_us=1000)
    rec.record(
        "ep", "AllTraffic", instances=2, status=424, model_us=500, total_us=600, model_error=True
    )
    text = rec.exposition().decode()
    assert 'sagemaker_Invocations_total{EndpointName="ep",VariantName="AllTraffic"} 2.0' in text
    assert (
        'sagemaker_InvocationsPerInstance_total{EndpointName="ep",VariantName="AllTraffic"} 1.0'
        in text
    )
    assert (
        'sagemaker_Invocation4XXErrors_total{EndpointName="ep",VariantName="AllTraffic"} 1.0'
        in text
    )
    assert (
        'sagemaker_InvocationModelErrors_total{EndpointName="ep",VariantName="AllTraffic"} 1.0'
        in text
    )
    assert 'sagemaker_ModelLatency_sum{EndpointName="ep",VariantName="AllTraffic"} 1300.0' in text
    assert 'sagemaker_OverheadLatency_sum{EndpointName="ep",VariantName="AllTraffic"} 300.0' in text


def test_forget_drops_an_endpoints_series() -> None:
    rec = Recorder()
    rec.record("gone", "v", instances=1, status=200, model_us=1, total_us=2)
    rec.record("kept", "v", instances=1, status=200, model_us=1, total_us=2)
    rec.forget("gone")
    text = rec.exposition().decode()
    assert 'EndpointName="gone"' not in text
    assert 'EndpointName="kept"' in text
