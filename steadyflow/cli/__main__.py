"""``python -m steadyflow.cli``."""

from steadyflow.cli import main

main()
