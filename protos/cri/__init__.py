"""Kubernetes' Container Runtime Interface (CRI), the wire-compatible subset skiff speaks."""
