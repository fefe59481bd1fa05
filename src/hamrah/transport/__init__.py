"""What travels between devices and the server: the versioned protobuf schema (``proto/fl.proto``),
named tensors as safetensors bytes in chunks, the FL plan, TLS credentials, device identity (hashed
tokens, Ed25519 device keys, signed requests) and provisioning."""

from hamrah.transport.certs import generate_tls, make_cert
from hamrah.transport.codec import (
    CHUNK_BYTES,
    TensorSpec,
    check_update,
    decode_params,
    encode_params,
    spec_of,
)
from hamrah.transport.identity import (
    DeviceKey,
    RequestRefused,
    RequestSigner,
    verify_signature,
    write_private,
)
from hamrah.transport.plan import PLAN_VERSION, Plan
from hamrah.transport.provision import DeviceCredentials, device_folders, provision
from hamrah.transport.security import DeviceRecord, TokenRegistry, channel_credentials, server_credentials

__all__ = [
    "CHUNK_BYTES",
    "PLAN_VERSION",
    "DeviceCredentials",
    "DeviceKey",
    "DeviceRecord",
    "Plan",
    "RequestRefused",
    "RequestSigner",
    "TensorSpec",
    "TokenRegistry",
    "channel_credentials",
    "check_update",
    "decode_params",
    "device_folders",
    "encode_params",
    "generate_tls",
    "make_cert",
    "provision",
    "server_credentials",
    "spec_of",
    "verify_signature",
    "write_private",
]
