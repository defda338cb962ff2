"""CloudWatch on the SageMaker API's port: Logs over the instance log files
(``logstore.py``, ``logs_api.py``) and metrics over a rolling per-minute history of the
invocation counters (``history.py``, ``stats.py``, ``metrics_api.py``)."""
