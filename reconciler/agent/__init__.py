"""`portctl agent`: the GitOps pull loop that keeps a router converged to a manifest in git.

config.py      flags and config file -> AgentConfig
source.py      git (shallow, one ref, optional signature check) or a local file -> Artifact
controller.py  one reconcile pass, and the loop that schedules passes, watches and events
status.py      conditions, revisions, inventory, last results
control.py     the HTTP listener (health, status, metrics, control) and its client
metrics.py     Prometheus metrics
logs.py        JSON-lines logs
notify.py      the optional webhook
"""
