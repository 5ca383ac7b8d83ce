"""The MongoDB backend (production and scale-out): PyMongo's native async API, index entries
embedded in each document as arrays, FHIR transactions as multi-document transactions.
See store.py for units of work and the change order, documents.py for the data model,
indexes.py for the indexes and the shard key, translate.py for search."""

from .store import MongoStore, MongoUnitOfWork, TransactionsUnavailable

__all__ = ["MongoStore", "MongoUnitOfWork", "TransactionsUnavailable"]
