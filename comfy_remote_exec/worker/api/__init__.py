"""The worker's HTTP API (aiohttp): the `/v1` job routes with bearer auth and JSON
errors (`api`), the polling API's `/submit_workflow` and `/status` (`compat`),
and the public shapes of their answers, those the job APIs' existing clients
read (`views`). Routes only translate HTTP to the job service and back.
"""
