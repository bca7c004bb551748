"""`python -m gdyn_backend` is the same as the `gdyn` command."""

from gdyn_backend.cli import main

raise SystemExit(main())
