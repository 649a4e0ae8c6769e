"""The agent's on-device store, one SQLite file: `database.EmbeddingStore` (what callers open) over
`connection` (the file, its transactions, counters, checks and errors), its schema in `migrations`, and one
module per part — `gallery` (people, embeddings, revision), `outbox` (MQTT), `audit` (door decisions),
`sync` (the fleet server's sync point and deltas), `reports` (typed events queued for the server),
`snapshots` (the face snapshots of those events) and `retained` (the MQTT topics published retained)."""
