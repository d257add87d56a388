"""Sources that read documents and sinks that write outputs and quarantined documents."""
