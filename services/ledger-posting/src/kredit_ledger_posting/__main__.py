from kredit_ledger_posting.app import main

main()
