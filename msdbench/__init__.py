"""msdbench: what microservice isolation and placement cost, measured reproducibly."""

__version__ = "0.1.0"
