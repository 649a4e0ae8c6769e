"""The long-running edge service (`facefleet-agent run`): the frame loop (loop.AgentService), the doors it
feeds, the commands it executes, what it reports about itself, and its links to the broker and the server."""
