"""`python -m kredit_invoicing` runs the invoicing service."""

from kredit_invoicing.app import main

main()
