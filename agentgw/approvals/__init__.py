"""Human approval of held calls (policy effect `approve`): the request store (store.py, postgres.py) and the service
that creates, announces, decides and waits on requests (service.py). Core: never imports a plane."""

from agentgw.approvals.service import (
    AlreadyDecided,
    ApprovalNotFound,
    Approvals,
    NotAnApprover,
    OwnRequest,
    open_store,
)
from agentgw.approvals.store import APPROVED, DENIED, EXPIRED, PENDING, Approval, ApprovalStore

__all__ = [
    "APPROVED",
    "DENIED",
    "EXPIRED",
    "PENDING",
    "AlreadyDecided",
    "Approval",
    "ApprovalNotFound",
    "ApprovalStore",
    "Approvals",
    "NotAnApprover",
    "OwnRequest",
    "open_store",
]
