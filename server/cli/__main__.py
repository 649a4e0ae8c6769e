"""`python -m facefleet.server.cli`: the facefleet-server command line."""

from facefleet.server.cli.main import main

raise SystemExit(main())
