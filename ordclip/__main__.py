from ordclip.cli import run

run()
