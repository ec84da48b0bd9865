"""`python -m kredit_settlement` runs the settlement service."""

from kredit_settlement.app import main

main()
