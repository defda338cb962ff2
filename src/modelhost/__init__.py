"""modelhost: self-hosted model hosting behind the Amazon SageMaker Inference API."""

__version__ = "0.1.0"
