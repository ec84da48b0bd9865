"""`python -m kredit_collections`: run the collections service."""

from kredit_collections.app import main

main()
