"""The job service: submitting, queueing, cancelling and finishing jobs over the
runner, with the parts it works over: the job store with each job's event log
(`jobs`), output storage in S3-compatible buckets (`storage`) and webhooks.
Its HTTP face is `worker/api/`.
"""
