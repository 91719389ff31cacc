"""Operating a running gateway: Prometheus metrics, health, and the status endpoint."""
