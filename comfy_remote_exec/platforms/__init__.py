"""Platform adapters: the worker behind a hosting platform's own entry point
(RunPod serverless, Modal), one room each. They may import the worker,
the backends and `jobapi`; nothing imports them.
"""
