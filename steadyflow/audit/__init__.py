"""Decision records, their store, and reports."""
