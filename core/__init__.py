"""What every FaceFleet program shares: errors and exit codes, the strict config base and TOML loading,
state-directory resolution, command-line helpers and systemd notification. Imports nothing of ours."""
