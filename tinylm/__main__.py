from tinylm.cli import app

app(prog_name="tinylm")
