"""The web console: its static files (static/, served at /console/) and the sessions of signed-in browsers.
It imports no other part of the server; the HTTP API (facefleet.server.api.http) serves it."""
