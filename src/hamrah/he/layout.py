"""Flatten named parameters into one float vector for encryption, and back: the one
:class:`~hamrah.core.params.ParamsLayout` of the code base (re-exported here for ``hamrah.he``)."""

from hamrah.core.params import ParamsLayout, flatten_params, unflatten_params

__all__ = ["ParamsLayout", "flatten_params", "unflatten_params"]
