"""`python -m finetune_core ...`: see finetune_core/cli.py for the commands."""
from .cli import main

raise SystemExit(main())
