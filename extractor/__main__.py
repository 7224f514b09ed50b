from extractor.cli import run_cli

run_cli()
