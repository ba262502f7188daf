"""The `resflow` command: a thin Typer shell over the library (app.py)."""


def main() -> None:
    """Console-script entry point."""
    from resflow.cli.app import main as run_app

    run_app()
