"""`python -m facefleet.agent.cli`: the facefleet-agent command line."""

from facefleet.agent.cli.main import main

raise SystemExit(main())
