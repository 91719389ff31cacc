"""Provider Gateway: moves files from data providers into S3 for Step Functions workflows."""

__version__ = "0.1.0"
