"""EHR exchange: consultation documents, $everything, Bulk export, subscriptions."""
