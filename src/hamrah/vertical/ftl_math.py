"""The algebra of federated transfer learning: each party's gradient as a linear map of the other's terms.

Liu, Kang, Xing, Chen, Yang 2020, *A Secure Federated Transfer Learning Framework* (IEEE Intelligent
Systems 35(4)). The guest (source domain, labels ``y`` in {-1, +1}) and the host (target domain, no
labels) map their features to representations ``u^A = tanh(Net^A(x^A))`` and ``u^B = tanh(Net^B(x^B))``
of width ``d``. With ``Phi = (1/N_A) sum_{k in A} y_k u^A_k`` over all the guest's rows, the host's
sample ``j`` is scored ``phi_j = Phi . u^B_j``. On a batch ``I`` of the overlap the loss is the paper's
second-order Taylor expansion of the logistic loss plus the alignment term (equation 6 and section 4):

    L = sum_{i in I} [ log 2 - 1/2 y_i phi_i + 1/8 phi_i^2 + gamma/2 ||u^A_i - u^B_i||^2 ]

Every gradient a party needs is linear in what the *other* party holds, which is what lets the
paper's protocol run under additively homomorphic encryption:

- the host sends its terms ``t_B = (u^B_I, sum_i u^B_i u^B_i^T, sum_i ||u^B_i||^2)``; the guest's
  ``(dL/dPhi, dL/du^A_I, L) = M_A t_B + c_A`` with ``M_A, c_A`` built from ``y, Phi, u^A_I``;
- the guest sends ``t_A = (y_i Phi for i in I, Phi Phi^T, u^A_I)``; the host's
  ``dL/du^B_I = M_B t_A + c_B`` with ``M_B, c_B`` built from ``u^B_I``.

Each party multiplies on the left by the transpose of its own Jacobian (representations with respect
to its network's parameters) to get its parameter gradient ``W t + w``: a plaintext matrix times the
other party's (possibly encrypted) terms. Plain and encrypted modes run exactly this code; only the
product is done in floats or under Paillier.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev


def guest_terms(y: np.ndarray, phi: np.ndarray, u_a: np.ndarray) -> np.ndarray:
    """Return ``t_A``: ``y_i Phi`` per batch row, ``Phi Phi^T`` and ``u^A_I``, flattened (length ``2bd + d^2``)."""
    return np.concatenate([(y[:, None] * phi[None, :]).ravel(), np.outer(phi, phi).ravel(), u_a.ravel()])


def host_terms(u_b: np.ndarray) -> np.ndarray:
    """Return ``t_B``: ``u^B_I``, ``sum u^B_i u^B_i^T`` and ``sum ||u^B_i||^2``, flattened (length ``bd + d^2 + 1``)."""
    return np.concatenate([u_b.ravel(), (u_b.T @ u_b).ravel(), [float(np.sum(u_b * u_b))]])


def guest_map(y: np.ndarray, phi: np.ndarray, u_a: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(M_A, c_A)`` with ``(dL/dPhi, dL/du^A_I flattened, L) = M_A t_B + c_A``.

    Args:
        y: the batch's labels in {-1, +1}, shape ``(b,)``.
        phi: ``Phi``, shape ``(d,)``.
        u_a: the guest's representations of the batch, shape ``(b, d)``.
        gamma: weight of the alignment term.

    Returns:
        ``M_A`` of shape ``(d + bd + 1, bd + d^2 + 1)`` and ``c_A`` of length ``d + bd + 1``.
    """
    b, d = u_a.shape
    m = np.zeros((d + b * d + 1, b * d + d * d + 1))
    c = np.zeros(d + b * d + 1)
    cols_u = np.arange(b * d).reshape(b, d)
    for k in range(d):
        m[k, cols_u[:, k]] = -0.5 * y  # -1/2 sum_i y_i u^B_ik
        m[k, b * d + k * d : b * d + (k + 1) * d] = 0.25 * phi  # 1/4 (S2 Phi)_k
    rows_a = d + np.arange(b * d)
    m[rows_a, np.arange(b * d)] = -gamma  # gamma (u^A - u^B)
    c[rows_a] = gamma * u_a.ravel()
    m[-1, : b * d] = (-0.5 * y[:, None] * phi[None, :] - gamma * u_a).ravel()
    m[-1, b * d : b * d + d * d] = 0.125 * np.outer(phi, phi).ravel()
    m[-1, -1] = gamma / 2
    c[-1] = b * math.log(2.0) + gamma / 2 * float(np.sum(u_a * u_a))
    return m, c


def host_map(u_b: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(M_B, c_B)`` with ``dL/du^B_I (flattened) = M_B t_A + c_B``.

    Args:
        u_b: the host's representations of the batch, shape ``(b, d)``.
        gamma: weight of the alignment term.

    Returns:
        ``M_B`` of shape ``(bd, 2bd + d^2)`` and ``c_B`` of length ``bd``.
    """
    b, d = u_b.shape
    m = np.zeros((b * d, 2 * b * d + d * d))
    rows = np.arange(b * d)
    m[rows, rows] = -0.5  # -1/2 y_i Phi_k
    for i in range(b):
        for k in range(d):
            m[i * d + k, b * d + k * d : b * d + (k + 1) * d] = 0.25 * u_b[i]  # 1/4 (Phi Phi^T u^B_i)_k
    m[rows, b * d + d * d + rows] = -gamma  # -gamma u^A_ik
    return m, gamma * u_b.ravel()


def represent(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Return the representations ``tanh(net(x))``."""
    return torch.tanh(net(x))


def _params(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in net.named_parameters()}


def _flatten(jac: dict[str, torch.Tensor], rows: int) -> np.ndarray:
    return torch.cat([j.reshape(rows, -1) for j in jac.values()], dim=1).double().numpy()


def jacobian(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Return d(representations of ``x``, flattened row-major) / d(parameters), shape ``(n d, P)``."""
    params = _params(net)
    jac = jacrev(lambda p: represent_with(net, p, x))(params)
    n, d = x.shape[0], next(iter(jac.values())).shape[1]
    return _flatten(jac, n * d)


def represent_with(net: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Return ``tanh(net(x))`` with ``params`` in place of the network's own."""
    return torch.tanh(functional_call(net, params, (x,)))


def phi_of(u_a: torch.Tensor, y_all: torch.Tensor) -> torch.Tensor:
    """Return ``Phi = mean_k y_k u^A_k``."""
    return (y_all[:, None] * u_a).mean(dim=0)


def phi_jacobian(net: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor) -> np.ndarray:
    """Return dPhi / d(parameters), shape ``(d, P)``."""
    jac = jacrev(lambda p: phi_of(represent_with(net, p, x_all), y_all))(_params(net))
    return _flatten(jac, next(iter(jac.values())).shape[0])


def apply_gradient(net: nn.Module, optimizer: torch.optim.Optimizer, grad: np.ndarray) -> None:
    """Set the network's gradients from the flat vector ``grad`` (parameter order) and take a step."""
    offset = 0
    for p in net.parameters():
        size = p.numel()
        p.grad = torch.from_numpy(grad[offset : offset + size].astype(np.float32)).reshape(p.shape)
        offset += size
    optimizer.step()


def num_params(net: nn.Module) -> int:
    """Return the number of parameters of ``net``."""
    return sum(p.numel() for p in net.parameters())


__all__ = [
    "apply_gradient",
    "guest_map",
    "guest_terms",
    "host_map",
    "host_terms",
    "jacobian",
    "num_params",
    "phi_jacobian",
    "phi_of",
    "represent",
    "represent_with",
]
