"""Stage kinds (ai, rules) and the degradation ladder, as plain Python: no Prefect here."""
