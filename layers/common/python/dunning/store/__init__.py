"""Storage: the single DynamoDB table (the only module that speaks DynamoDB)."""

from dunning.store.dynamo import (
    BookRevision,
    DuePage,
    DynamoStore,
    Mutation,
    OutboxRecord,
    PolicyBook,
    StoredView,
    WriteResult,
)
from dunning.store.errors import (
    ConflictError,
    DecisionTooLargeError,
    NotFoundError,
    RetryableError,
    StoreError,
)
from dunning.store.schema import TABLE, TableDefinition

__all__ = [
    "TABLE",
    "BookRevision",
    "ConflictError",
    "DecisionTooLargeError",
    "DuePage",
    "DynamoStore",
    "Mutation",
    "NotFoundError",
    "OutboxRecord",
    "PolicyBook",
    "RetryableError",
    "StoreError",
    "StoredView",
    "TableDefinition",
    "WriteResult",
]
