"""One construct per capability, mirroring the runtime folders.

`data` (tables, key), `layer` (the shared package), `function_factory` (the
shared Lambda defaults, a role per function), `evaluate` (functions/evaluate),
`actions` (functions/actions), `api` (functions/api), `monitoring`
(dashboard, alarms).
"""
