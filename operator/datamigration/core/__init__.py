"""The pure core: models and decisions, with no I/O.

Nothing in this package imports kopf, the Kubernetes client or SQLAlchemy, reads the clock or
talks to a network (enforced by `.importlinter`). Everything here is a function of its arguments,
so every decision the operator takes can be tested as a table of named cases.
"""
