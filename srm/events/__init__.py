"""`srm events`: the session events, read from every shard's stream and delivered.

- ``schema``: a stream entry as the event of the contract (API.md, "Events");
- ``sinks``: where events go: JSON lines on stdout, or JSON arrays POSTed to a webhook;
- ``consumer``: the consumer-group loop (read, deliver, acknowledge, claim) and its metrics;
- ``main``: `srm events` as a process.
"""
