"""Where experiments run: one Target interface (base.py) over local processes and Kubernetes clusters."""
