"""`python -m objmount` runs the command-line interface."""

from objmount.cli import main

main()
