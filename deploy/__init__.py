"""Deployment tooling: ``make cluster`` (deploy/cluster.py) and the scale-out benchmark."""
