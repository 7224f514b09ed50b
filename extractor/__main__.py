from extractor.cli.main import run_cli

if __name__ == "__main__":  # parser processes are spawned: never run the CLI on import
    run_cli()
