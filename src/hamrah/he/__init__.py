"""Homomorphic encryption for aggregation: clients encrypt, the server adds, a key holder decrypts the sum.

- :mod:`hamrah.he.paillier`: Paillier vectors (encrypt, add, multiply by plaintexts, decrypt), reusable on
  their own, e.g. for encrypted gradients in vertical FL; :mod:`hamrah.he.paillier_codec`: their bytes.
- :mod:`hamrah.he.encoding`: fixed-point encoding and slot packing with headroom for ``max_clients``.
- :mod:`hamrah.he.ckks`: batched CKKS through TenSEAL.
- :mod:`hamrah.he.scheme`: one interface over both (``PaillierScheme``, ``CKKSScheme``).
- :mod:`hamrah.he.layout`: named parameters to one vector and back.
- :mod:`hamrah.he.stage`: :class:`HomomorphicSum`, the pipeline's secure-sum stage under encryption, and
  :class:`KeyHolder`, the one object that holds the secret key and decrypts aggregates.
"""

from hamrah.he.ckks import CKKSCiphertext, CKKSConfig, ckks_scale
from hamrah.he.encoding import FixedPoint, Packing
from hamrah.he.layout import ParamsLayout, flatten_params, unflatten_params
from hamrah.he.paillier import (
    EncryptedVector,
    PrivateKey,
    PublicKey,
    add,
    add_plain,
    decrypt_ints,
    decrypt_vector,
    dot_plain,
    encrypt_packed,
    encrypt_vector,
    matvec_plain,
    mul_plain,
    paillier_keygen,
    scale_packed,
    sum_vectors,
)
from hamrah.he.paillier_codec import (
    public_key_from_bytes,
    public_key_to_bytes,
    vector_from_bytes,
    vector_to_bytes,
)
from hamrah.he.scheme import (
    CKKSScheme,
    HEKeys,
    HEScheme,
    PaillierConfig,
    PaillierScheme,
)
from hamrah.he.stage import HEPayload, HESettings, HomomorphicSum, KeyHolder, he_settings

__all__ = [
    "CKKSCiphertext",
    "CKKSConfig",
    "CKKSScheme",
    "EncryptedVector",
    "FixedPoint",
    "HEKeys",
    "HEPayload",
    "HEScheme",
    "HESettings",
    "HomomorphicSum",
    "KeyHolder",
    "Packing",
    "PaillierConfig",
    "PaillierScheme",
    "ParamsLayout",
    "PrivateKey",
    "PublicKey",
    "add",
    "add_plain",
    "ckks_scale",
    "decrypt_ints",
    "decrypt_vector",
    "dot_plain",
    "encrypt_packed",
    "encrypt_vector",
    "flatten_params",
    "he_settings",
    "matvec_plain",
    "mul_plain",
    "paillier_keygen",
    "public_key_from_bytes",
    "public_key_to_bytes",
    "scale_packed",
    "sum_vectors",
    "unflatten_params",
    "vector_from_bytes",
    "vector_to_bytes",
]
