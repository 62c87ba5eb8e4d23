"""``python -m zoo`` runs the odzoo command line."""
from .cli import main

raise SystemExit(main())
