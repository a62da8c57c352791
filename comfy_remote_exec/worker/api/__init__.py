"""The worker's HTTP API (aiohttp): the `/v1` job routes with bearer auth and JSON
errors (`api`), and the seed API's `/submit_workflow` and `/status` (`compat`).
Routes only translate HTTP to the job service and back.
"""
