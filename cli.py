"""Run the actstore CLI from a checkout: ``python cli.py extract ...``."""
from actstore.cli import main

if __name__ == "__main__":
    main()
