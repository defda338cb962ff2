"""Multi-model endpoints (Mode MultiModel): which instance serves a TargetModel, loading and
unloading models there through the MMS container API, and their metrics.

- ``spec.py``: a variant's ``MultiModelSpec`` from its container and instance type (controller).
- ``policy.py``: placement and eviction, pure functions over ``InstanceModels`` snapshots.
- ``mms.py``: the MMS container API (``POST /models`` ...) over the router's ``UpstreamPool``.
- ``archives.py``: TargetModel -> an extracted directory (artifacts/ cache), disk LRU.
- ``manager.py``: ``MultiModelRouter``, the orchestration: one task per request, single-flight
  loads, LRU unloads, ``ModelCacheSetting: Disabled``, waits and errors.
- ``metrics.py``: ModelCacheHit, ModelLoadingWaitTime, ... under SageMaker's names.
"""
