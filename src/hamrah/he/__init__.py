"""Homomorphic encryption for aggregation: clients encrypt, the server adds, a key holder decrypts the sum.

- :mod:`hamrah.he.paillier`: Paillier vectors (encrypt, add, multiply by plaintexts, decrypt), reusable on
  their own, e.g. for encrypted gradients in vertical FL; :mod:`hamrah.he.paillier_codec`: their bytes.
- :mod:`hamrah.he.encoding`: fixed-point encoding and slot packing with headroom for ``max_clients``.
- :mod:`hamrah.he.ckks`: batched CKKS through TenSEAL.
- :mod:`hamrah.he.scheme`: one interface over both (``PaillierScheme``, ``CKKSScheme``).
- :mod:`hamrah.he.layout`: named parameters to one vector and back.
"""

from hamrah.he.ckks import CKKSCiphertext, CKKSConfig
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

__all__ = [
    "CKKSCiphertext", "CKKSConfig", "CKKSScheme", "EncryptedVector", "FixedPoint", "HEKeys", "HEScheme", "Packing",
    "PaillierConfig", "PaillierScheme", "ParamsLayout", "PrivateKey", "PublicKey", "add", "add_plain",
    "decrypt_ints", "decrypt_vector", "dot_plain", "encrypt_packed", "encrypt_vector", "flatten_params",
    "matvec_plain", "mul_plain", "paillier_keygen", "public_key_from_bytes", "public_key_to_bytes", "sum_vectors",
    "unflatten_params", "vector_from_bytes", "vector_to_bytes",
]
