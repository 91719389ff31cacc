"""Configuration: ``collections.yml`` read into frozen, checked dataclasses."""

from provider_gateway.config.loader import cloudformation_resolver, load_config, parse_config, unresolved_resources
from provider_gateway.config.model import (
    Config,
    ConnConfig,
    FtpConnConfig,
    GatewayConfig,
    HttpConnConfig,
    ProviderConfig,
    SftpConnConfig,
    masked,
)

__all__ = [
    "Config",
    "ConnConfig",
    "FtpConnConfig",
    "GatewayConfig",
    "HttpConnConfig",
    "ProviderConfig",
    "SftpConnConfig",
    "cloudformation_resolver",
    "load_config",
    "masked",
    "parse_config",
    "unresolved_resources",
]
