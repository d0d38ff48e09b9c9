"""Fixtures of the operator's end-to-end tests, shared by every module in this folder."""

from fixtures import kube, namespace, operator

__all__ = ["kube", "namespace", "operator"]
