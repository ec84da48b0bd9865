from kredit_shared.cli import app

app(prog_name="kredit")
