"""The one adapter that talks to the Kubernetes API.

Only modules in this package import the `kubernetes` client (enforced by `.importlinter`). They
speak plain JSON dicts with the rest of the code base, so the pure core and the runner never see
client models, and tests can substitute the adapter at this boundary.
"""
