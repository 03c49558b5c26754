"""The reaper: ends sessions whose keep-alive lapsed and removes ended ones.

- ``core``: the passes over the shards (sweep, purge, audit) and their metrics;
- ``sidecar``: `srm reaper` as a process, and the same reaper as the companion that the
  embedded `srm serve` runs beside its API;
- ``health``: the reaper's id, where it finds Redis, and `srm reaper --check` (kept light:
  a container healthcheck imports it every few seconds).
"""
