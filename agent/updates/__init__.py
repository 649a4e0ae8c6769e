"""Model versions assigned by the fleet server: resumable download, verification, smoke test, switch
and prune."""
