"""hamrah: federated learning, from a fast single-machine simulator to real server and devices."""

__version__ = "0.1.0"
