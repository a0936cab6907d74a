"""Domain errors: specific classes with messages a user can act on."""

from __future__ import annotations


class CrossdockError(Exception):
    """Base of every error Crossdock raises on purpose."""


class InvalidOrder(CrossdockError):
    """An order cannot be decided on as given (e.g. a zero-quantity line)."""


class UnknownSku(CrossdockError):
    """A SKU the ERP material master does not know."""

    def __init__(self, sku: str) -> None:
        self.sku = sku
        super().__init__(f"{sku} is not in the ERP material master")


class UnknownDocument(CrossdockError):
    """A purchase order (or another document) the system does not know."""

    def __init__(self, kind: str, doc_id: str) -> None:
        self.kind = kind
        self.doc_id = doc_id
        super().__init__(f"{kind} {doc_id} is not known")


class UnknownOrder(CrossdockError):
    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"order {order_id} is not known to the OMS")


class ConnectorError(CrossdockError):
    """A system could not be reached or refused a request; usually worth a retry."""


class PermanentConnectorError(ConnectorError):
    """A system rejected a request as invalid; retrying will not help."""


class StockConflict(CrossdockError):
    """Stock changed under a proposal: executing it now would oversell."""
