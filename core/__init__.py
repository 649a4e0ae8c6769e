"""What every FaceFleet program shares: errors and exit codes, the strict config base and TOML loading,
state-directory resolution, command-line helpers, systemd notification and the numbered migrations of
SQLite files. Imports nothing of ours."""
