"""The Kubernetes target, through the official client: target.py (the Target), api.py (connecting, one-line errors),
submit.py (all or nothing), status.py, logs.py (streaming that reconnects), portforward.py and tensorboard.py."""
