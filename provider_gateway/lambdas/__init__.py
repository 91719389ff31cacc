"""AWS Lambda handlers of the callback downloader workflow: thin adapters over the engine.

| handler | what it does |
|---|---|
| ``provider_gateway.lambdas.callbacks.register`` | stores a waiting task token under a callback id, announces the URL |
| ``provider_gateway.lambdas.callbacks.receive`` | the provider's authenticated callback (API Gateway HTTP API) |
| ``provider_gateway.lambdas.files.list_files`` | the provider's file list, routed per file |
| ``provider_gateway.lambdas.download.download`` | one file streamed into S3, no /tmp |
| ``provider_gateway.lambdas.summary.summarize`` | what was copied and what failed, and why |

Their settings come from the environment (see :mod:`provider_gateway.lambdas.environment`).
"""
