"""The central server: validates, stores (idempotently) and receipts device results; patient registry."""
