"""The built-in model server that runs inside an endpoint instance.

Start it with `python -m modelhost.runtime serve`. It honours the SageMaker container contract
(`GET /ping`, `POST /invocations`, SIGTERM) and the sagemaker-inference-toolkit handler contract
(`model_fn`, `input_fn`, `predict_fn`, `output_fn`, `transform_fn`).

Modules: `server` (HTTP), `handlers` (user code and the handler chain), `codecs` (default
decoders/encoders and Accept negotiation), `loaders` (default `model_fn` per framework).
Importing this package stays cheap: nothing heavy is imported here.
"""
