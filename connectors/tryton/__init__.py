"""Tryton (open-source ERP) over JSON-RPC: client, test server, scenario loader and adapters."""
