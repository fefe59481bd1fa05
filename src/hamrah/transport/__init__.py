"""What travels between devices and the server: the versioned protobuf schema (``proto/fl.proto``),
named tensors as safetensors bytes in chunks, the FL plan, TLS credentials and device tokens."""

from hamrah.transport.codec import CHUNK_BYTES, TensorSpec, check_update, decode_params, encode_params, spec_of
from hamrah.transport.plan import PLAN_VERSION, Plan
from hamrah.transport.security import TokenRegistry, channel_credentials, generate_tls, server_credentials

__all__ = [
    "CHUNK_BYTES", "PLAN_VERSION", "Plan", "TensorSpec", "TokenRegistry", "channel_credentials", "check_update",
    "decode_params", "encode_params", "generate_tls", "server_credentials", "spec_of",
]
