"""`python -m bluegreen`: the command line, as the `bluegreen` script runs it."""

from bluegreen.faces.cli import main

raise SystemExit(main())
