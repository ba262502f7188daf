"""`python -m resflow` is the same as the `resflow` command."""

from resflow.cli.app import main

main()
