"""The Prefect edge: compile pipelines into flows and run them."""
