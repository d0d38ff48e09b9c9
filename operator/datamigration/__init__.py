"""datamigration-operator: zero-downtime database changes on Kubernetes.

A `DataMigration` carries one change through expand, backfill, code-rollout and contract.
The package is layered (see `.importlinter`):

- `datamigration.core`: pure decisions and models; knows nothing of kopf, the API or SQL.
- `datamigration.k8s`: the one adapter that talks to the Kubernetes API.
- `datamigration.controller`: thin kopf handlers that observe, decide and act.
- `datamigration.runner`: the phase step runner that executes inside each phase Job.
- `datamigration.lint`: the SQL safety lint shared by the runner, the operator and the CLI.
- `datamigration.cli`: the user CLI (`kubectl datamigration ...`).
"""

__version__ = "0.1.0"
