"""`python -m mailer [serve|migrate|sandbox]`."""

from mailer.cli import main

raise SystemExit(main())
