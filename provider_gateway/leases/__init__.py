"""Connection leases in DynamoDB: one ``num_connections`` limit shared by every gateway replica."""

from provider_gateway.leases.connection import LeasedConnection, LeasedFactory
from provider_gateway.leases.slots import Lease, LeaseSlots
from provider_gateway.leases.table import LeaseTable, create_table

__all__ = ["Lease", "LeaseSlots", "LeaseTable", "LeasedConnection", "LeasedFactory", "create_table"]
