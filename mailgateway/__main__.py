"""Run the command line with `python -m mailgateway`."""

from mailgateway.cli import main

main()
