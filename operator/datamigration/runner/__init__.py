"""The phase step runner (`datamigration-runner`), the program inside every phase Job.

One module per job: `main` (entry point, exit codes, last line), `plan` (input), `engine`
(per-dialect engines, SQLite transactional DDL), `locking` (one runner per migration), `ledger`
(what ran, checkpoints, compare-and-swap), `phase` (the step loop), `execute` (sql and verify
steps), `backfill` (resumable batches), `batching` (adaptive batch size), `progress` (status
patches, pause), `sqltext` (the only SQL we build), `dberrors`, `errors`, `redact` (secrets),
`logs`. docs/runner.md is the manual.
"""
