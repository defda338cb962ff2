"""Asynchronous inference (InvokeEndpointAsync): a durable queue in the state store
(state/async_queue.py), workers that send queued requests through the router's pools
(worker.py), results in the object store (objects.py), the rules as pure functions
(policy.py). The wire side is api/async_invocations.py."""
