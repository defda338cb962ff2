"""The BentoML side of bench/compare_servers.py: the iris model behind two `@bentoml.api`s.

Run by `bentoml serve bento_service:IrisClassifier` from the throwaway BentoML venv (never
imported by modelhost). BENCH_MODEL_PATH names the joblib file. Both APIs take the body
`{"rows": [[5.1, 3.5, 1.4, 0.2]]}` and answer the JSON list of predicted classes:
`POST /predict` one request at a time, `POST /predict_batched` with BentoML's adaptive batching
(requests stacked along axis 0, at most 32 rows, the same limit as modelhost's default).
"""

from __future__ import annotations

import os

import bentoml
import joblib
import numpy as np


@bentoml.service(workers=1)
class IrisClassifier:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL_PATH"])

    @bentoml.api
    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.model.predict(rows)

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=32, max_latency_ms=1000)
    def predict_batched(self, rows: np.ndarray) -> np.ndarray:
        return self.model.predict(rows)
