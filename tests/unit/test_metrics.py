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


def test_record_ok_counts_as_record_with_a_200() -> None:
    fast, general = Recorder(), Recorder()
    for rec in (fast, general):
        rec.record("ep", "v", instances=2, status=200, model_us=10, total_us=30)
    fast.record_ok("ep", "v", 2, 800.0, 1000.0)
    general.record("ep", "v", instances=2, status=200, model_us=800.0, total_us=1000.0)
    fast.record_ok("new", "v", 1, 5.0, 4.0)  # a first call makes the series
    general.record("new", "v", instances=1, status=200, model_us=5.0, total_us=4.0)
    assert fast.exposition() == general.exposition()
