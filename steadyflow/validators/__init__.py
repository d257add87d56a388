"""Validator layers (structural today; semantic, business and safety to come)."""
