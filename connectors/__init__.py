"""Connectors: ports (Protocols) and adapters, the only code that talks to WMS, ERP and OMS."""
