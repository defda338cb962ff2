"""Model data: download, safe extraction and a content-addressed cache.

``ArtifactCache.materialize(ModelDataUrl, ModelDataSource)`` returns the directory that holds
the model (what SageMaker places at /opt/ml/model). Failures raise :class:`ArtifactError`
whose message can be shown verbatim as an endpoint's ``FailureReason``.
"""

from __future__ import annotations

from modelhost.artifacts.cache import ArtifactCache
from modelhost.artifacts.errors import ArtifactError

__all__ = ["ArtifactCache", "ArtifactError"]
