"""Whether a Ray cluster will let this driver in, asked before `ray.init`.

A cluster started with token authentication (`ray start` with `RAY_AUTH_MODE=token`, or with a
token already in `~/.ray/auth_token`) refuses a driver that sends no token, or another one.
`ray.init` then retries for seconds, printing its GCS client's warnings, and ends in
"Failed to connect to Ray cluster", which reads as a cluster that is not there. One call to
the GCS, with the metadata Ray itself would send, tells the two apart.
"""

from __future__ import annotations

TOKEN_SOURCES = "~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"


def auth_refusal(hostport: str, timeout_s: float = 5.0) -> str | None:
    """Why the cluster whose GCS is at `hostport` refuses this process's credentials, or None
    (it lets it in, or it could not be asked: `ray.init` then says what it finds)."""
    try:
        import grpc
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
        from ray._private.authentication.grpc_authentication_client_interceptor import (
            _get_authentication_metadata_tuple,
        )
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # Ray's private modules moved: leave it to ray.init
        return None
    with grpc.insecure_channel(hostport) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s,
                              metadata=_get_authentication_metadata_tuple())
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAUTHENTICATED:
                return None
        else:
            return None
    if not is_token_auth_enabled():
        return ("it requires token authentication and this driver sends no token; set "
                f"RAY_AUTH_MODE=token, with the cluster's token in {TOKEN_SOURCES}")
    return ("it refused this driver's token; give the cluster's token in "
            f"{TOKEN_SOURCES}")
