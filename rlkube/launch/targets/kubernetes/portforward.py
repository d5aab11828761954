"""A local TCP port tunnelled to a pod's port through the API server, like `kubectl port-forward`."""

import contextlib
import select
import socket
import threading
from collections.abc import Callable

from kubernetes import client
from kubernetes.stream import portforward


def _pipe(left: socket.socket, right: socket.socket) -> None:
    sockets = [left, right]
    try:
        while True:
            readable, _, _ = select.select(sockets, [], [], 1.0)
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                (right if sock is left else left).sendall(data)
    except OSError:
        return
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def forward(api: client.ApiClient, namespace: str, pod: str, remote_port: int, local_port: int,
            ready: Callable[[int], None]) -> None:
    """Serve 127.0.0.1:local_port until interrupted, each connection tunnelled to the pod's port through the API
    server; `ready` gets the port bound."""
    core = client.CoreV1Api(api)
    with socket.create_server(("127.0.0.1", local_port)) as server:
        ready(server.getsockname()[1])
        while True:
            connection, _ = server.accept()
            tunnel = portforward(core.connect_get_namespaced_pod_portforward, pod, namespace,
                                 ports=str(remote_port))
            threading.Thread(target=_pipe, args=(connection, tunnel.socket(remote_port)), daemon=True).start()
